-- The newest experiment of the lake.
with final as (
    select experiment_id from experiments order by created_at desc limit 1
)

select * from final
