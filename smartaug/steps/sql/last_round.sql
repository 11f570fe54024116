-- The latest curriculum round of an experiment (none before the first).
-- Parameters: $experiment_id.
with final as (
    select selection_id, round
    from drift
    where experiment_id = $experiment_id
    order by round desc
    limit 1
)

select * from final
