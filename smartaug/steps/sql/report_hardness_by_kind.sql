-- Mean AVH and accuracy of the baseline on the original train images and on each kind of
-- augmentation of the pool.
-- Parameters: $model_id, $pool_id.
with final as (
    select
        coalesce(a.kind, 'original') as kind,
        count(*) as n,
        avg(s.avh) as mean_avh,
        avg(s.correct::int) as accuracy
    from scores as s
    join scoring_runs as r using (scoring_run_id)
    left join augmentations as a on a.aug_id = s.item_id
    where r.model_id = $model_id and (r.split = 'train' or r.pool_id = $pool_id)
    group by all
)

select * from final order by mean_avh
