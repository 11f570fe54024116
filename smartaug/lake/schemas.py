"""The lake's tables, defined once: each table's pyarrow schema and partition key. The scores
table's columns come from ``smartaug.config.SCORE_DIRECTIONS``; the DuckDB views
(``views_sql``, and the ``storage/views.sql`` shipped for the DuckDB CLI) are generated here.
"""

from __future__ import annotations

import pyarrow as pa

from smartaug.config import SCORE_COLUMNS

__all__ = ["OPTIONAL", "SCHEMAS", "PARTITION_KEYS", "PRODUCED_BY", "PROVENANCE", "TABLES", "views_sql"]

_F = pa.float64()
_IMAGE = [("image", pa.binary()), ("height", pa.int32()), ("width", pa.int32()),
          ("channels", pa.int32())]
PROVENANCE = [("created_at", pa.timestamp("us", tz="UTC")), ("git_sha", pa.string())]


def _table(key: str, *columns) -> tuple[str, pa.Schema]:
    return key, pa.schema([(key, pa.string()), *columns])


# table -> (partition key, schema); the partition key is the schema's first column
_TABLES: dict[str, tuple[str, pa.Schema]] = {
    "datasets": _table(
        "dataset_id", ("name", pa.string()), ("config", pa.string()), ("classes", pa.string()),
        ("n_train", pa.int64()), ("n_val", pa.int64()), ("n_test", pa.int64()),
        ("height", pa.int32()), ("width", pa.int32()), ("channels", pa.int32()),
        ("fingerprint", pa.string()), *PROVENANCE),
    "samples": _table(
        "dataset_id", ("split", pa.string()), ("sample_id", pa.string()),
        ("label", pa.int64()), *_IMAGE),
    "pools": _table(
        "pool_id", ("dataset_id", pa.string()), ("config", pa.string()),
        ("n_items", pa.int64()), ("materialized", pa.bool_()), ("seconds", _F), *PROVENANCE),
    "augmentations": _table(
        "pool_id", ("aug_id", pa.string()), ("sample_id", pa.string()), ("label", pa.int64()),
        ("k", pa.int32()), ("kind", pa.string()), ("angle", _F), ("sigma", _F),
        ("flipped", pa.bool_()), ("seed", pa.int64()), ("spec_hash", pa.string()),
        ("params", pa.string()), *_IMAGE),
    "models": _table(
        "model_id", ("arch", pa.string()), ("dataset_id", pa.string()), ("config", pa.string()),
        ("parent_model_id", pa.string()), ("checkpoint", pa.string()), ("sha256", pa.string()),
        ("train_acc", _F), ("val_acc", _F), ("test_acc", _F), ("test_avh", _F),
        ("seconds", _F), *PROVENANCE),
    "scoring_runs": _table(
        "scoring_run_id", ("model_id", pa.string()), ("pool_id", pa.string()),
        ("dataset_id", pa.string()), ("split", pa.string()), ("n_items", pa.int64()),
        ("n_undefined", pa.int64()), ("batch_size", pa.int64()), ("device", pa.string()),
        ("seconds", _F), ("train_run_id", pa.string()), ("epoch", pa.int64()), *PROVENANCE),
    "scores": _table(
        "scoring_run_id", ("model_id", pa.string()), ("pool_id", pa.string()),
        ("item_id", pa.string()), ("label", pa.int64()), ("pred", pa.int64()),
        ("correct", pa.bool_()), *[(c, _F) for c in SCORE_COLUMNS]),
    "selections": _table(
        "selection_id", ("scoring_run_id", pa.string()), ("method", pa.string()),
        ("score_column", pa.string()), ("band_lo", _F), ("band_hi", _F),
        ("per_class", pa.bool_()), ("params", pa.string()), ("sql_file", pa.string()),
        ("aug_id", pa.string()), ("label", pa.int64()), ("score", _F), *PROVENANCE),
    "experiments": _table(
        "experiment_id", ("preset", pa.string()), ("config", pa.string()),
        ("dataset_id", pa.string()), ("baseline_model_id", pa.string()),
        ("pool_id", pa.string()), ("scoring_run_id", pa.string()),
        ("selections", pa.string()), ("band_search", pa.string()), *PROVENANCE),
    "studies": _table(
        "study_id", ("preset", pa.string()), ("config", pa.string()),
        ("dataset_id", pa.string()), ("baseline_model_id", pa.string()),
        ("pools", pa.string()), ("cells", pa.string()), ("seconds", _F), *PROVENANCE),
    "runs": _table(
        "run_id", ("experiment_id", pa.string()), ("method", pa.string()),
        ("rep", pa.int64()), ("seed", pa.int64()), ("selection_id", pa.string()),
        ("n_train", pa.int64()), ("n_augmented", pa.int64()), ("loss", pa.string()),
        ("lam", _F), ("epochs", pa.int64()), ("init", pa.string()), ("train_acc", _F),
        ("val_acc", _F), ("test_acc", _F), ("test_avh", _F), ("seconds", _F),
        ("purpose", pa.string()), ("items_seen", pa.int64()), ("backward_passes", pa.int64()),
        ("gradient_steps", pa.int64()), ("n_distinct", pa.int64()), *PROVENANCE),
    "history": _table(
        "run_id", ("epoch", pa.int64()), ("train_loss", _F), ("train_acc", _F),
        ("val_acc", _F), ("val_avh", _F), ("test_acc", _F), ("test_avh", _F),
        ("feature_norm_mean", _F), ("weight_norm_mean", _F), ("seconds", _F),
        ("samples", pa.int64()), ("augmented", pa.int64()), ("steps", pa.int64())),
    "drift": _table(
        "selection_id", ("previous_selection_id", pa.string()), ("experiment_id", pa.string()),
        ("model_id", pa.string()), ("scoring_run_id", pa.string()), ("round", pa.int64()),
        ("jaccard", _F), ("moved_in", pa.int64()), ("moved_out", pa.int64()),
        ("ks_avh", _F), ("ks_pvalue", _F), *PROVENANCE),
    "atlas": _table(
        "atlas_id", ("scoring_run_id", pa.string()), ("originals_run_id", pa.string()),
        ("bins", pa.int64()), ("kind", pa.string()), ("magnitude_bin", pa.int32()),
        ("magnitude_min", _F), ("magnitude_max", _F), ("label", pa.int64()),
        ("n", pa.int64()), *[(f"{s}_{q}", _F) for s in ("avh", "loss", "margin")
                             for q in ("mean", "q1", "median", "q3")],
        ("n_orig_correct", pa.int64()), ("n_flipped", pa.int64()), ("flip_rate", _F),
        ("confidence_drop_mean", _F), ("class_name", pa.string()), *PROVENANCE),
}
# columns added after a table's first release: a writer that does not give them writes NULL
# (as the DuckDB views read them from partitions written before they existed)
OPTIONAL: dict[str, frozenset[str]] = {
    "scoring_runs": frozenset({"train_run_id", "epoch"}),
    "runs": frozenset({"items_seen", "backward_passes", "gradient_steps", "n_distinct"}),
    "history": frozenset({"samples", "augmented", "steps"}),
}
TABLES: tuple[str, ...] = tuple(_TABLES)
SCHEMAS: dict[str, pa.Schema] = {t: s for t, (_, s) in _TABLES.items()}
PARTITION_KEYS: dict[str, str] = {t: k for t, (k, _) in _TABLES.items()}
# the command that writes each table's partitions (named when one is missing)
PRODUCED_BY: dict[str, str] = {
    "datasets": "ingest", "samples": "ingest", "pools": "augment", "augmentations": "augment",
    "models": "baseline", "scoring_runs": "score", "scores": "score", "selections": "select",
    "experiments": "experiment", "studies": "study", "runs": "experiment",
    "history": "experiment", "drift": "reselect", "atlas": "atlas"}

_VIEWS_HEADER = """\
-- One DuckDB view per smartaug table, over the table's Parquet partitions.
-- Ad hoc, from the repository root:   duckdb -init storage/views.sql
-- or through the pipeline's own root:  smartaug sql "SELECT ..."  (same file, root substituted)
-- Partitions appear only when complete (atomic rename), so these views never see partial files.
"""


def views_sql(root: str = "storage") -> str:
    """One ``CREATE OR REPLACE VIEW`` per table over ``root``'s Parquet files (DuckDB SQL).
    ``views_sql()`` is the text of ``storage/views.sql``."""
    quoted = root.replace("'", "''")
    return _VIEWS_HEADER + "\n" + "".join(
        f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM read_parquet('{quoted}/{t}/*/*.parquet', "
        "union_by_name = true, hive_partitioning = false);\n" for t in TABLES)
