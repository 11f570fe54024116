-- The per-epoch history of the given runs.
-- Parameters: $run_ids (a list).
with final as (
    select * from history where run_id in (select unnest($run_ids))
)

select * from final order by run_id, epoch
