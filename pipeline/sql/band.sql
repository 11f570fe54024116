-- Items of one scoring run whose score lies in the [lo, hi) quantile band of that run
-- (quantile_cont, linear interpolation), over all items or within each class.
-- hi = 1 includes the maximum. Items whose score is NULL/NaN (undefined AVH) are left out.
-- Ties at a boundary are all in or all out: the result depends only on the scores.
-- Parameters: $files (the run's Parquet files), $score (a score column name),
--             $lo, $hi (quantile levels in [0, 1]), $per_class (boolean).
with scores as (
    select
        item_id,
        label,
        case $score
            when 'avh' then avh
            when 'avc_true' then avc_true
            when 'confidence' then confidence
            when 'margin' then margin
            when 'loss' then loss
            when 'entropy' then entropy
            when 'el2n' then el2n
            when 'feature_norm' then feature_norm
        end as score
    from read_parquet($files)
),

defined as (
    select * from scores where score is not null and not isnan(score)
),

bounds as (
    select
        case when $per_class then label else -1 end as grp,
        quantile_cont(score, $lo) as q_lo,
        quantile_cont(score, $hi) as q_hi
    from defined
    group by grp
),

final as (
    select d.item_id, d.label, d.score
    from defined as d
    join bounds as b on b.grp = (case when $per_class then d.label else -1 end)
    where d.score >= b.q_lo
      and (d.score < b.q_hi or ($hi >= 1.0 and d.score <= b.q_hi))
)

select * from final order by item_id
