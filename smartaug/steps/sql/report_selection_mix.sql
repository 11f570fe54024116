-- Augmentations of a selection per (kind, label).
-- Parameters: $selection_id.
with final as (
    select a.kind, a.label, count(*) as n
    from selections as s
    join augmentations as a using (aug_id)
    where s.selection_id = $selection_id
    group by all
)

select * from final order by all
