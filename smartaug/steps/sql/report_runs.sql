-- The retraining runs of an experiment's methods (band-search trials left out).
-- Parameters: $experiment_id.
with final as (
    select * from runs where experiment_id = $experiment_id and purpose = 'method'
)

select * from final order by method, rep
