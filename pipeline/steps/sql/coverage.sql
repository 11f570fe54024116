-- Coverage-style selection (after coverage-centric coreset selection, Zheng et al. 2023) of
-- exactly $quotas[g] items per group g: drop the hardest $drop fraction of the group (never
-- so many that fewer than the quota remain), cut the remaining hardness range into $bins
-- equal-width bins, then draw evenly across bins: round r takes the r-th item of every bin
-- not yet exhausted (bins in a seeded order), items within a bin in a seeded random order.
-- Hardness = score * $direction. Groups as in window.sql. NULL/NaN scores are left out.
-- Parameters: $files, $score, $direction, $drop (in [0, 1)), $bins (>= 1), $seed,
--             $per_class, $groups, $quotas.
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
        row_number() over (partition by d.grp order by d.hardness desc, d.item_id) - 1
            as r_hard,
        count(*) over (partition by d.grp) as total
    from defined as d
    join quotas as q on q.grp = d.grp
),

kept as (
    select * from ranked where r_hard >= greatest(least(floor($drop * total), total - n), 0)
),

bounds as (
    select grp, min(hardness) as lo, max(hardness) as hi from kept group by grp
),

binned as (
    select
        k.*,
        case
            when b.hi > b.lo
                then least(floor((k.hardness - b.lo) / (b.hi - b.lo) * $bins), $bins - 1)
            else 0
        end as bin
    from kept as k
    join bounds as b on b.grp = k.grp
),

drawn as (
    select
        *,
        row_number() over (
            partition by grp, bin order by md5(item_id || ':' || $seed::varchar), item_id
        ) as r_bin
    from binned
),

picked as (
    select
        *,
        row_number() over (
            partition by grp order by r_bin, md5(bin::varchar || ':' || $seed::varchar), bin
        ) as r_pick
    from drawn
),

final as (
    select item_id, label, score from picked where r_pick <= n
)

select * from final order by item_id
