-- The defined AVH values of one scoring run.
-- Parameters: $scoring_run_id.
with final as (
    select avh from scores where scoring_run_id = $scoring_run_id and avh is not null
)

select * from final
