-- Every item of one scoring run.
-- Parameters: $files.
with final as (
    select item_id, label, cast(null as double) as score from read_parquet($files)
)

select * from final order by item_id
