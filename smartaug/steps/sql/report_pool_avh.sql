-- AVH of every augmentation of a scoring run, with its kind.
-- Parameters: $scoring_run_id.
with final as (
    select a.kind, s.avh
    from scores as s
    join augmentations as a on a.aug_id = s.item_id
    where s.scoring_run_id = $scoring_run_id and s.avh is not null
)

select * from final
