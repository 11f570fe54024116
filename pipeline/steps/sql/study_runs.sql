-- The runs of a study's cells (one row per run).
-- Parameters: $ids (the cells' run ids).
select run_id, seed, n_train, n_augmented, loss, val_acc, test_acc, seconds
from runs
where list_contains($ids, run_id)
