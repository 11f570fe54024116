-- Every model with its parent, oldest first (lineages are walked from this list).
with final as (
    select model_id, parent_model_id, created_at from models order by created_at
)

select * from final
