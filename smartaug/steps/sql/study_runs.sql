-- The runs of a study's cells (one row per run). Every column: a lake written before a
-- column existed (items_seen, backward_passes, gradient_steps,
-- n_distinct) reads it as missing.
-- Parameters: $ids (the cells' run ids).
select *
from runs
where list_contains($ids, run_id)
