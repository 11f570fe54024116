-- AVH of the original train images under a model.
-- Parameters: $model_id.
with final as (
    select s.avh
    from scores as s
    join scoring_runs as r using (scoring_run_id)
    where r.model_id = $model_id and r.split = 'train' and s.avh is not null
)

select * from final
