-- Items of one scoring run whose score lies in the [lo, hi) quantile band of that run
-- (quantile_cont, linear interpolation), over all items or within each class.
-- hi = 1 includes the maximum. Items whose score is NULL/NaN (undefined AVH) are left out.
-- Ties at a boundary are all in or all out: the result depends only on the scores.
-- Parameters: $files (the run's Parquet files), $score (a score column name),
--             $lo, $hi (quantile levels in [0, 1]), $per_class (boolean).
with scores as (
    -- the column named $score
    select item_id, label, columns(lambda c: c = $score) as score from read_parquet($files)
),

defined as (
    select * from scores where score is not null and not isnan(score)
),

-- One branch runs: the other's filter is constant-false and DuckDB prunes it.
global_bounds as (
    select quantile_cont(score, [$lo, $hi]) as q from defined where not $per_class
),

class_bounds as (
    select label, quantile_cont(score, [$lo, $hi]) as q
    from defined
    where $per_class
    group by label
),

final as (
    select d.item_id, d.label, d.score
    from defined as d, global_bounds as b
    where not $per_class
      and d.score >= b.q[1]
      and (d.score < b.q[2] or ($hi >= 1.0 and d.score <= b.q[2]))
    union all
    select d.item_id, d.label, d.score
    from defined as d
    join class_bounds as b on b.label = d.label
    where $per_class
      and d.score >= b.q[1]
      and (d.score < b.q[2] or ($hi >= 1.0 and d.score <= b.q[2]))
)

select * from final order by item_id
