-- Augmentations of a pool per (kind, label).
-- Parameters: $pool_id.
with final as (
    select kind, label, count(*) as n from augmentations where pool_id = $pool_id group by all
)

select * from final
