-- A window of exactly $quotas[g] items per group g of one scoring run: the items ranked by
-- hardness (score * $direction, ascending; ties broken by item_id: macros.sql's `ranked`),
-- the window starting at the $lo quantile of that ranking (0 = the easiest item), moved back
-- so it fits (hardest = 1 - budget). Groups: every class ($per_class, $groups = the labels)
-- or the whole run ($groups = [-1]). Items whose score is NULL/NaN are left out.
-- Parameters: $files (the run's Parquet files), $score (a score column name),
--             $direction (+1: higher is harder, -1: lower is harder), $lo (in [0, 1]),
--             $per_class (boolean), $groups, $quotas (lists of equal length).
with placed as (
    select *, greatest(least(round($lo * total), total - n), 0) as start
    from ranked($files, $score, $direction, $per_class, $groups, $quotas)
),

final as (
    select item_id, label, score from placed where r >= start and r < start + n
)

select * from final order by item_id
