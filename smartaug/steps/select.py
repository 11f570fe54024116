"""Step ``select``: a scoring run -> a selection of its items, through DuckDB (one SQL file per
query in ``sql/``, every value a bound parameter). ``band``: the [lo, hi) quantile band of a
score (``quantile_cont``), over all items or per class (for AVH low = easy: seed 000 kept
0.02-0.22); ``random_subset``: a size, a fraction, or another selection's size and class mix
(M1); ``all_items`` (M0). For the study, every one of exactly ``n`` items: ``window`` (a window
of the hardness ranking at a position), ``coverage`` (drop the hardest, then draw evenly across
score bins) and ``random_stratified`` (the pool's class mix, ``class_quotas``). A selection's id
hashes its run, method, parameters and
its SQL file's normalised text (``sql.sql_hash``: comments and layout do not count)."""

from __future__ import annotations

import json

import pyarrow as pa

from smartaug.config import SCORE_COLUMNS, SELECTION_RULES, Selector
from smartaug.errors import UserError
from smartaug.lake import Lake, LakeError, content_id, query_arrow
from smartaug.steps.sql import sql_hash, sql_text

__all__ = ["SelectionError", "all_items", "band", "class_quotas", "coverage",
           "pick", "random_stratified", "random_subset", "read_selection", "size_of", "window"]


class SelectionError(UserError, ValueError):
    """The selection cannot be made as asked; the message says why and how to fix it."""


def _files(lake: Lake, scoring_run_id: str) -> list[str]:
    if not lake.has("scoring_runs", scoring_run_id):
        raise SelectionError(f"no scoring run {scoring_run_id!r} in {lake.url()}; "
                             f"run `smartaug score` first")
    return lake.files("scores", scoring_run_id)


def _query(lake: Lake, sql_file: str, params: dict) -> pa.Table:
    """Run a selection query (``sql/<sql_file>``) with the table macros it may use."""
    con = lake.engine()
    try:
        con.execute(sql_text("macros.sql"))
        return query_arrow(con, sql_text(sql_file), params)
    finally:
        con.close()


def _store(lake: Lake, scoring_run_id: str, method: str, sql_file: str, params: dict,
           query_params: dict, *, score_column: str | None = None, lo=None, hi=None,
           per_class: bool = False, expected: int | None = None) -> str:
    selection_id = content_id("selection", {
        "scoring_run_id": scoring_run_id, "method": method, "params": params,
        "sql": sql_hash(sql_file, "macros.sql")})
    if lake.has("selections", selection_id):
        return selection_id
    rows = _query(lake, sql_file, query_params)
    n = rows.num_rows
    if n == 0:
        raise SelectionError(
            f"the {method} selection {json.dumps(params)} of scoring run {scoring_run_id} "
            f"selects nothing; widen the band or check the run's scores "
            f"(smartaug sql \"select count(*) from scores where scoring_run_id = "
            f"'{scoring_run_id}'\")")
    if expected is not None and n != expected:
        raise SelectionError(
            f"the {method} selection {json.dumps(params)} of scoring run {scoring_run_id} holds "
            f"{n} items, not the {expected} asked for: the run has too few items with a defined "
            f"{params.get('score', 'score')} for this budget; lower the budget")
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
        _same_items(lake, scoring_run_id, matched_to)
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
    return pick(lake, scoring_run_id, Selector("random-unstratified"), size, seed=seed)


def _same_items(lake: Lake, scoring_run_id: str, matched_to: str) -> None:
    """A matched subset draws from the items the other selection was drawn from: its scoring
    run must cover the same pool (or the same split of the same dataset)."""
    rows = read_selection(lake, matched_to).column("scoring_run_id")
    if len(rows) == 0:
        raise SelectionError(f"selection {matched_to} is empty: nothing to match")
    other = rows[0].as_py()
    keys = ("pool_id", "dataset_id", "split")
    mine, theirs = (lake.row("scoring_runs", r) for r in (scoring_run_id, other))
    if any(mine[k] != theirs[k] for k in keys):
        def items(row):
            return (f"pool {row['pool_id']}" if row["pool_id"] else
                    f"the {row['split']} split") + f" of dataset {row['dataset_id']}"

        raise SelectionError(
            f"selection {matched_to} was drawn from {items(theirs)} (scoring run {other}), "
            f"scoring run {scoring_run_id} scores {items(mine)}: a subset matched to its "
            f"class mix would compare different items. Match a selection of the same pool")


def _check_score(score: str) -> None:
    if score not in SCORE_COLUMNS:
        raise SelectionError(f"unknown score column {score!r}; valid: {', '.join(SCORE_COLUMNS)}")


def class_counts(lake: Lake, scoring_run_id: str, score: str = "") -> dict[int, int]:
    """Items per class of a run (with ``score``: those whose score is defined)."""
    rows = _query(lake, "class_counts.sql", {"files": _files(lake, scoring_run_id), "score": score})
    return dict(zip(rows["label"].to_pylist(), rows["n"].to_pylist(), strict=True))


def class_quotas(counts: dict[int, int], n: int) -> dict[int, int]:
    """``n`` items shared out in proportion to ``counts`` (largest remainders; a tie goes to
    the lower label): the quotas sum to ``n`` exactly and none exceeds its class."""
    total = sum(counts.values())
    if not 1 <= n <= total:
        raise SelectionError(f"a budget of {n} items does not fit a run of {total} items; "
                             f"give a budget between 1 and {total} items")
    exact = {c: n * k / total for c, k in counts.items()}
    quotas = {c: int(v) for c, v in exact.items()}
    short = n - sum(quotas.values())
    for c in sorted(counts, key=lambda c: (-(exact[c] - quotas[c]), c))[:short]:
        quotas[c] += 1
    return quotas


def _groups(lake: Lake, scoring_run_id: str, n: int, score: str, per_class: bool) -> dict:
    counts = class_counts(lake, scoring_run_id, score)
    defined = sum(counts.values())
    if n > defined:
        total = lake.row("scoring_runs", scoring_run_id)["n_items"]
        raise SelectionError(f"a budget of {n} items is larger than the {defined} of "
                             f"{total} items of scoring run {scoring_run_id} with a defined "
                             f"{score}; lower the budget")
    if per_class:  # every class its share of the pool's class mix
        quotas = class_quotas(class_counts(lake, scoring_run_id), n)
        lacking = [c for c, q in quotas.items() if q > counts.get(c, 0)]
        if lacking:
            raise SelectionError(f"class {lacking[0]} has {counts.get(lacking[0], 0)} items "
                                 f"with a defined {score}, fewer than its share "
                                 f"{quotas[lacking[0]]} of {n}; lower the budget or select "
                                 f"over all classes (per_class = false)")
        return {"groups": list(quotas), "quotas": list(quotas.values())}
    return {"groups": [-1], "quotas": [n]}


def window(lake: Lake, scoring_run_id: str, n: int, *, score: str = "avh", lo: float = 0.0,
           per_class: bool = False) -> str:
    """Exactly ``n`` items: the window of the hardness ranking by ``score`` (easiest first)
    that starts at quantile ``lo`` (0 = the easiest; moved back to fit, so 1 - n/N = the
    hardest), over all items or in each class with its share of ``n``. Returns selection_id."""
    return pick(lake, scoring_run_id, Selector("window", score), n, start=lo,
                per_class=per_class)


def coverage(lake: Lake, scoring_run_id: str, n: int, *, score: str = "avh",
             drop: float = 0.1, bins: int = 50, seed: int = 0, per_class: bool = False) -> str:
    """Exactly ``n`` items: the hardest ``drop`` fraction by ``score`` left out, then drawn
    evenly across ``bins`` equal-width bins of the rest (``coverage.sql``). Returns
    selection_id."""
    return pick(lake, scoring_run_id, Selector("coverage", score), n, drop=drop, bins=bins,
                seed=seed, per_class=per_class)


def random_stratified(lake: Lake, scoring_run_id: str, n: int, *, seed: int = 0) -> str:
    """Exactly ``n`` random items with the run's class mix (``class_quotas``). Returns
    selection_id."""
    return pick(lake, scoring_run_id, Selector("random"), n, seed=seed)


def all_items(lake: Lake, scoring_run_id: str) -> str:
    """Every item of the run (M0). Returns selection_id."""
    return pick(lake, scoring_run_id, Selector("all"), 0)


# ------------------------------------------------------------------ a grid selector's rule


def size_of(lake: Lake, scoring_run_id: str, *, size: int | None = None,
            fraction: float | None = None) -> tuple[int, float]:
    """(items, budget) of a selection of exactly ``size`` items or a ``fraction`` of the run's
    (rounded), the budget being the share those items are of the run."""
    if (size is None) == (fraction is None):
        raise SelectionError("--window, --coverage and --stratified take one of --size N or "
                             "--fraction F")
    _files(lake, scoring_run_id)  # a missing run, named
    total = lake.row("scoring_runs", scoring_run_id)["n_items"]
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise SelectionError(f"--fraction must be in (0, 1], got {fraction}")
    n = size if size is not None else round(fraction * total)
    return n, n / total


def pick(lake: Lake, scoring_run_id: str, selector: Selector, n: int | None, *,
         budget: float | None = None, seed: int = 0, per_class: bool = True,
         drop: float = 0.1, bins: int = 50, start: float | None = None) -> str:
    """The selection ``selector`` makes of a scoring run by its kind's rule
    (``smartaug.config.SELECTION_RULES``): the one path the study's cells, ``smartaug
    select`` and ``window``, ``coverage``, ``random_stratified`` and ``all_items`` share.
    ``n`` items at ``budget`` (the share a window's position is placed by; default ``n``
    over the run's items), ``seed`` for the random draws, ``per_class`` for windows and
    coverage, coverage's ``drop`` and ``bins``, a window's ``start`` quantile in place of its
    position. Returns selection_id."""
    rule = SELECTION_RULES.get(selector.kind)
    if rule is None:
        raise SelectionError(f"{selector.name} makes no selection of its own; selectors that "
                             f"do: {', '.join(SELECTION_RULES)}")
    if selector.score is not None:
        _check_score(selector.score)
    files = _files(lake, scoring_run_id)
    if budget is None and start is None and selector.kind == "window":
        budget = n / lake.row("scoring_runs", scoring_run_id)["n_items"]
    params = rule.params(selector, n, budget=budget, start=start, seed=seed,
                         per_class=per_class, drop=drop, bins=bins)
    wrong = rule.check(params)
    if wrong:
        raise SelectionError(wrong)
    query = {"files": files, **rule.bind(params)}
    if rule.quotas == "mix":
        quotas = class_quotas(class_counts(lake, scoring_run_id), int(n))
        query.update(groups=list(quotas), quotas=list(quotas.values()))
    elif rule.quotas == "defined":
        query.update(_groups(lake, scoring_run_id, int(n), params["score"],
                             params["per_class"]))
    elif "n" in params:  # an unstratified draw: from the run's items
        total = lake.row("scoring_runs", scoring_run_id)["n_items"]
        if not 1 <= params["n"] <= total:
            raise SelectionError(f"size must be between 1 and the run's {total} items, got "
                                 f"{params['n']}")
    return _store(lake, scoring_run_id, rule.method, rule.sql, params, query,
                  score_column=params.get("score"),
                  per_class=params.get("per_class", rule.quotas == "mix"),
                  expected=int(n) if rule.quotas else None)


def read_selection(lake: Lake, selection_id: str) -> pa.Table:
    """The rows of one selection (aug_id, label, score, ...)."""
    if not lake.has("selections", selection_id):
        raise LakeError(f"no selection {selection_id!r} in {lake.url()}")
    return lake.read("selections", selection_id)
