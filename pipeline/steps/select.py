"""Step ``select``: a scoring run -> a selection of its items, through DuckDB (one SQL file per
query in ``sql/``, every value a bound parameter). ``band``: the [lo, hi) quantile band of a
score (``quantile_cont``), over all items or per class (for AVH low = easy: seed 000 kept
0.02-0.22); ``random_subset``: a size, a fraction, or another selection's size and class mix
(M1); ``all_items`` (M0). A selection's id hashes its run, method, parameters and SQL text."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

from pipeline.config import SCORE_COLUMNS
from pipeline.lake import Lake, LakeError, content_id, query_arrow
from pipeline.steps.sql import sql_text

__all__ = ["SelectionError", "all_items", "band", "random_subset", "read_selection"]


class SelectionError(ValueError):
    """The selection cannot be made as asked; the message says why and how to fix it."""


def _files(lake: Lake, scoring_run_id: str) -> list[str]:
    if not lake.has("scoring_runs", scoring_run_id):
        raise SelectionError(f"no scoring run {scoring_run_id!r} in {lake.url()}; "
                             f"run `smartaug score` first")
    return lake.files("scores", scoring_run_id)


def _store(lake: Lake, scoring_run_id: str, method: str, sql_file: str, params: dict,
           query_params: dict, *, score_column: str | None = None, lo=None, hi=None,
           per_class: bool = False) -> str:
    text = sql_text(sql_file)
    selection_id = content_id("selection", {
        "scoring_run_id": scoring_run_id, "method": method, "params": params,
        "sql": hashlib.sha256(text.encode()).hexdigest()})
    if lake.has("selections", selection_id):
        return selection_id
    con = lake.engine()
    try:
        rows = query_arrow(con, text, query_params)
    finally:
        con.close()
    n = rows.num_rows
    if n == 0:
        raise SelectionError(
            f"the {method} selection {json.dumps(params)} of scoring run {scoring_run_id} "
            f"selects nothing; widen the band or check the run's scores "
            f"(smartaug sql \"select count(*) from scores where scoring_run_id = "
            f"'{scoring_run_id}'\")")
    lake.write("selections", selection_id, {
        "selection_id": [selection_id] * n, "scoring_run_id": [scoring_run_id] * n,
        "method": [method] * n, "score_column": [score_column] * n,
        "band_lo": pa.array([lo] * n, pa.float64()), "band_hi": pa.array([hi] * n, pa.float64()),
        "per_class": [per_class] * n, "params": [json.dumps(params, sort_keys=True)] * n,
        "sql_file": [sql_file] * n, "aug_id": rows["item_id"], "label": rows["label"],
        "score": rows["score"].cast(pa.float64())})
    return selection_id


def band(lake: Lake, scoring_run_id: str, lo: float, hi: float, *, score: str = "avh",
         per_class: bool = False) -> str:
    """Select items whose ``score`` lies in the [lo, hi) quantile band; returns selection_id.

    0 <= lo < hi <= 1; hi = 1 includes the maximum. Items with an undefined score are left out.
    """
    if score not in SCORE_COLUMNS:
        raise SelectionError(f"unknown score column {score!r}; valid: {', '.join(SCORE_COLUMNS)}")
    lo, hi = float(lo), float(hi)
    if not (0.0 <= lo <= 1.0 and 0.0 <= hi <= 1.0):
        raise SelectionError(f"band [{lo}, {hi}) lies outside [0, 1]: both ends are quantile "
                             f"levels, e.g. --band 0.02 0.22")
    if lo >= hi:
        raise SelectionError(f"band [{lo}, {hi}) is empty: lo must be below hi")
    files = _files(lake, scoring_run_id)
    params = {"score": score, "lo": lo, "hi": hi, "per_class": bool(per_class)}
    return _store(lake, scoring_run_id, "band", "band.sql", params,
                  {"files": files, **params}, score_column=score, lo=lo, hi=hi,
                  per_class=bool(per_class))


def random_subset(lake: Lake, scoring_run_id: str, *, size: int | None = None,
           fraction: float | None = None, matched_to: str | None = None, seed: int = 0) -> str:
    """A random subset: ``size`` items, a ``fraction`` of all, or ``matched_to`` another
    selection's size and class mix. Returns selection_id."""
    if sum(x is not None for x in (size, fraction, matched_to)) != 1:
        raise SelectionError("give exactly one of size, fraction, matched_to")
    files = _files(lake, scoring_run_id)
    if matched_to is not None:
        if not lake.has("selections", matched_to):
            raise SelectionError(f"no selection {matched_to!r} to match in {lake.url()}")
        params = {"matched_to": matched_to, "seed": int(seed)}
        return _store(lake, scoring_run_id, "random", "random_matched.sql", params,
                      {"files": files, "matched_files": lake.files("selections", matched_to),
                       "seed": int(seed)})
    total = lake.row("scoring_runs", scoring_run_id)["n_items"]
    if fraction is not None:
        if not (0.0 < fraction <= 1.0):
            raise SelectionError(f"fraction must be in (0, 1], got {fraction}")
        size = int(round(fraction * total))
    if size is None or size < 1 or size > total:
        raise SelectionError(f"size must be between 1 and the run's {total} items, got {size}")
    params = {"n": int(size), "seed": int(seed)}
    return _store(lake, scoring_run_id, "random", "random.sql", params,
                  {"files": files, **params})


def all_items(lake: Lake, scoring_run_id: str) -> str:
    """Every item of the run (M0). Returns selection_id."""
    return _store(lake, scoring_run_id, "all", "all.sql", {}, {"files": _files(lake, scoring_run_id)})


def read_selection(lake: Lake, selection_id: str) -> pa.Table:
    """The rows of one selection (aug_id, label, score, ...)."""
    if not lake.has("selections", selection_id):
        raise LakeError(f"no selection {selection_id!r} in {lake.url()}")
    return lake.read("selections", selection_id)
