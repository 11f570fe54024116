-- A random subset of one scoring run with the same size and class mix as another selection.
-- Randomness = md5 of (item_id, seed): the same seed gives the same subset on any machine.
-- Parameters: $files (the run's Parquet files), $matched_files (the other selection's files),
--             $seed (integer).
with items as (
    select item_id, label, cast(null as double) as score from read_parquet($files)
),

wanted as (
    select label, count(*) as n from read_parquet($matched_files) group by label
),

ranked as (
    select
        s.*,
        row_number() over (
            partition by s.label order by md5(s.item_id || ':' || $seed::varchar), s.item_id
        ) as r
    from items as s
),

final as (
    select r.item_id, r.label, r.score
    from ranked as r
    join wanted as w on w.label = r.label
    where r.r <= w.n
)

select * from final order by item_id
