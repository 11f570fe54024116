-- Coverage-style selection (after coverage-centric coreset selection, Zheng et al. 2023) of
-- exactly $quotas[g] items per group g: drop the hardest $drop fraction of the group (never
-- so many that fewer than the quota remain), cut the remaining hardness range into $bins
-- equal-width bins, then draw evenly across bins: round r takes the r-th item of every bin
-- not yet exhausted (bins in a seeded order), items within a bin in a seeded random order.
-- Hardness = score * $direction (macros.sql's `ranked`). Groups as in window.sql. NULL/NaN
-- scores are left out.
-- Parameters: $files, $score, $direction, $drop (in [0, 1)), $bins (>= 1), $seed,
--             $per_class, $groups, $quotas.
with ranked_hard as (
    select
        *,
        row_number() over (partition by grp order by hardness desc, item_id) - 1 as r_hard
    from ranked($files, $score, $direction, $per_class, $groups, $quotas)
),

kept as (
    select * from ranked_hard
    where r_hard >= greatest(least(floor($drop * total), total - n), 0)
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
