-- A window of exactly $quotas[g] items per group g of one scoring run: the items ranked by
-- hardness (score * $direction, ascending; ties broken by item_id), the window starting at
-- the $lo quantile of that ranking (0 = the easiest item), moved back so it fits
-- (hardest = 1 - budget). Groups: every class ($per_class, $groups = the labels) or the whole
-- run ($groups = [-1]). Items whose score is NULL/NaN (undefined AVH) are left out.
-- Parameters: $files (the run's Parquet files), $score (a score column name),
--             $direction (+1: higher is harder, -1: lower is harder), $lo (in [0, 1]),
--             $per_class (boolean), $groups, $quotas (lists of equal length).
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
    select
        item_id,
        label,
        score,
        score * $direction as hardness,
        case when $per_class then label else -1 end as grp
    from scores
    where score is not null and not isnan(score)
),

quotas as (
    select unnest($groups) as grp, unnest($quotas) as n
),

ranked as (
    select
        d.*,
        q.n,
        row_number() over (partition by d.grp order by d.hardness, d.item_id) - 1 as r,
        count(*) over (partition by d.grp) as total
    from defined as d
    join quotas as q on q.grp = d.grp
),

placed as (
    select *, greatest(least(round($lo * total), total - n), 0) as start from ranked
),

final as (
    select item_id, label, score from placed where r >= start and r < start + n
)

select * from final order by item_id
