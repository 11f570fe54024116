-- A random subset of one scoring run with exactly $quotas[i] items of class $groups[i] (the
-- study gives every class its share of the pool: the pool's class mix).
-- Randomness = md5 of (item_id, seed): the same seed gives the same subset on any machine.
-- Parameters: $files (the run's Parquet files), $groups (labels), $quotas (items per label),
--             $seed (integer).
with items as (
    select item_id, label from read_parquet($files)
),

quotas as (
    select unnest($groups) as label, unnest($quotas) as n
),

ranked as (
    select
        i.item_id,
        i.label,
        q.n,
        row_number() over (
            partition by i.label order by md5(i.item_id || ':' || $seed::varchar), i.item_id
        ) as r
    from items as i
    join quotas as q on q.label = i.label
),

final as (
    select item_id, label, cast(null as double) as score from ranked where r <= n
)

select * from final order by item_id
