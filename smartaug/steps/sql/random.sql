-- A uniform random subset of $n items of one scoring run (md5 of item_id and seed).
-- Parameters: $files, $n (integer), $seed (integer).
with items as (
    select item_id, label, cast(null as double) as score from read_parquet($files)
),

ranked as (
    select *, row_number() over (order by md5(item_id || ':' || $seed::varchar), item_id) as r
    from items
),

final as (
    select item_id, label, score from ranked where r <= $n
)

select * from final order by item_id
