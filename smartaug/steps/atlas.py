"""Step ``atlas``: one scoring run of a pool -> what the baseline makes of each kind of
augmentation at each magnitude, per class (``atlas`` table; ``sql/atlas.sql``).

Per kind x magnitude bin x class: the count ``n``; mean and quartiles of AVH, loss and margin;
``n_orig_correct`` (augmentations whose original the baseline classifies correctly),
``n_flipped`` (of those, the ones whose augmentation it classifies wrongly), ``flip_rate =
n_flipped / n_orig_correct`` (NULL when no original of the cell is right), and the mean drop of
the true class's probability from the original to the augmentation. Magnitudes are
``smartaug.core.magnitude``'s: a grid pool's own bins, else each kind's range cut into
``bins`` equal bins; a kind without a magnitude (a flip) is one bin, 0. The originals are
scored by the same model (``score_split``, found when it exists).
"""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pyarrow as pa

from smartaug.core.magnitude import SCALES, bin_of, declared_scale, magnitude_of, scale_of
from smartaug.core.stats import rank_agreement, weak_baseline, wilson
from smartaug.errors import InputError
from smartaug.lake import Lake, content_id, git_sha, query_arrow
from smartaug.lake.readers import PIXEL_COLUMNS, PoolPixels, classes, pool_config
from smartaug.steps import score as score_
from smartaug.steps.report import figure_png, write_report_files
from smartaug.steps.sql import sql_hash, sql_text

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the non-interactive backend

__all__ = ["AtlasError", "build_atlas", "class_spread", "read_atlas", "write_atlas_report"]

DEFAULT_BINS = 5
MIN_ITEMS = 5  # an atlas refuses cells (kind x bin, over the classes) with fewer items


class AtlasError(InputError):
    """An atlas cannot be made from this run; the message says why and what to do."""


def _items(lake: Lake, run: dict, originals_run: str, bins: int) -> pa.Table:
    """One row per augmentation: kind, magnitude, bin, label, scores, the original's."""
    pool = lake.row("pools", run["pool_id"])
    cfg = pool_config(pool)
    meta = lake.row("datasets", pool["dataset_id"])
    h, w = meta["height"], meta["width"]
    aug = lake.read("augmentations", run["pool_id"],
                    columns=["aug_id", "sample_id", "label", "kind", "params"])
    scores = lake.read("scores", run["scoring_run_id"],
                       columns=["item_id", "pred", "correct", "avh", "loss", "margin"])
    orig = lake.read("scores", originals_run, columns=["item_id", "correct", "loss"])
    by_aug = {a: i for i, a in enumerate(scores.column("item_id").to_pylist())}
    by_orig = {s: i for i, s in enumerate(orig.column("item_id").to_pylist())}
    ids = aug.column("aug_id").to_pylist()
    missing = [a for a in ids if a not in by_aug]
    if missing:
        raise AtlasError(f"scoring run {run['scoring_run_id']} has no scores for "
                         f"{len(missing)} of pool {run['pool_id']}'s augmentations (e.g. "
                         f"{missing[0]}); score the whole pool: smartaug score --pool-id "
                         f"{run['pool_id']}")
    si = np.asarray([by_aug[a] for a in ids])
    oi = np.asarray([by_orig[s] for s in aug.column("sample_id").to_pylist()])
    kinds = aug.column("kind").to_pylist()
    declared = _declared(cfg)
    scales = {k: declared.get(k) or scale_of(k, cfg.max_angle) for k in set(kinds)}
    grid = cfg.magnitude_bins or bins
    mags, bin_ = [], []
    for kind, params in zip(kinds, aug.column("params").to_pylist(), strict=True):
        p = json.loads(params) if params else {}
        m = magnitude_of(kind, p, h, w, scales[kind])
        mags.append(m)
        b = p.get("magnitude_bin") if cfg.magnitude_bins else None
        bin_.append(b if b is not None else
                    (bin_of(m, grid, scales[kind]) if scales[kind] is not None else 0))
    if any(b is None for b in bin_):
        kind = next(k for k, b in zip(kinds, bin_, strict=True) if b is None)
        raise AtlasError(f"pool {run['pool_id']}: kind {kind!r} has a magnitude, but its "
                         f"augmentations did not record it; build the pool on a magnitude grid "
                         f"(magnitude_bins = N in its augment config, --magnitude-bins N)")
    p_true = np.exp(-scores.column("loss").to_numpy(zero_copy_only=False))
    o_true = np.exp(-orig.column("loss").to_numpy(zero_copy_only=False))
    return pa.table({
        "aug_id": ids, "kind": kinds, "label": aug.column("label"),
        "magnitude": pa.array(mags, pa.float64()), "magnitude_bin": pa.array(bin_, pa.int32()),
        "avh": scores.column("avh").take(si), "loss": scores.column("loss").take(si),
        "margin": scores.column("margin").take(si),
        "correct": scores.column("correct").take(si), "p_true": p_true[si],
        "orig_correct": orig.column("correct").take(oi), "orig_p_true": o_true[oi]})


def _declared(cfg) -> dict:
    """A space file's kinds that declare their magnitude: name -> Scale reading the named
    parameter (``magnitude: {param, lo, hi, stronger}``)."""
    out = {}
    for name, spec in cfg.space:
        decl = json.loads(spec).get("magnitude")
        if decl:
            out[name] = declared_scale(name, decl)
    return out


def build_atlas(lake: Lake, scoring_run_id: str, *, bins: int = DEFAULT_BINS,
                min_items: int = MIN_ITEMS, device: str = "auto", trust=(), log=None) -> str:
    """The atlas of ``scoring_run_id`` (a pool's scoring run); returns atlas_id (found, not
    recomputed, when it exists). Raises AtlasError when a kind x magnitude cell holds fewer
    than ``min_items`` augmentations (naming them) or the run is not a pool's."""
    if not isinstance(bins, int) or isinstance(bins, bool) or not 1 <= bins <= 100:
        raise AtlasError(f"bins must be an integer in [1, 100], got {bins!r}")
    if not lake.has("scoring_runs", scoring_run_id):
        raise AtlasError(f"no scoring run {scoring_run_id!r} in {lake.url()}; run `smartaug "
                         f"score --pool-id P` first")
    run = {**lake.row("scoring_runs", scoring_run_id), "scoring_run_id": scoring_run_id}
    if not run["pool_id"]:
        raise AtlasError(f"scoring run {scoring_run_id} scored the {run['split']} split's "
                         f"originals, not a pool: give a pool's scoring run (smartaug score "
                         f"--pool-id P)")
    atlas_id = content_id("atlas", {"scoring_run_id": scoring_run_id, "bins": bins,
                                    "sql": sql_hash("atlas.sql")})
    if lake.has("atlas", atlas_id):
        return atlas_id
    dataset_id = lake.row("pools", run["pool_id"])["dataset_id"]
    originals = score_.score_split(lake, run["model_id"], dataset_id, "train", device=device,
                                   trust=trust)
    items = _items(lake, run, originals, bins)
    con = lake.engine()
    try:
        con.register("items", items)
        cells = query_arrow(con, "select kind, magnitude_bin, count(*) n from items group by "
                                 "all having count(*) < $m order by all", {"m": min_items})
        if cells.num_rows:
            few = ", ".join(f"{k} bin {b}: {n}" for k, b, n in zip(*(
                cells.column(c).to_pylist() for c in ("kind", "magnitude_bin", "n")),
                strict=True))
            raise AtlasError(
                f"scoring run {scoring_run_id}: {cells.num_rows} kind x magnitude cell(s) hold "
                f"fewer than {min_items} augmentations ({few}); build a larger pool (more "
                f"augmentations per image, k:N), fewer bins (--bins), or a pool on a magnitude "
                f"grid (--magnitude-bins N)")
        table = query_arrow(con, sql_text("atlas.sql"), None)
    finally:
        con.close()
    names = classes(lake, dataset_id)
    n = table.num_rows
    lake.write("atlas", atlas_id, {
        "atlas_id": [atlas_id] * n, "scoring_run_id": [scoring_run_id] * n,
        "originals_run_id": [originals] * n, "bins": [bins] * n,
        **{c: table.column(c) for c in table.column_names},
        "class_name": [names[i] if 0 <= i < len(names) else str(i)
                       for i in table.column("label").to_pylist()]})
    if log:
        log(f"atlas {atlas_id}: {n} kind x magnitude x class cells of scoring run "
            f"{scoring_run_id}")
    return atlas_id


def read_atlas(lake: Lake, atlas_id: str) -> pa.Table:
    """The atlas' rows."""
    if not lake.has("atlas", atlas_id):
        raise AtlasError(f"no atlas {atlas_id!r} in {lake.url()}; run `smartaug atlas "
                         f"--scoring-run-id R` first")
    return lake.read("atlas", atlas_id)


# ------------------------------------------------------------------ report


def _by_kind_bin(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """The atlas pooled over classes: (kind, bin) -> n, n_orig_correct, n_flipped, flip rate,
    magnitude range."""
    out: dict[tuple[str, int], dict] = {}
    for r in rows:
        c = out.setdefault((r["kind"], r["magnitude_bin"]), {
            "n": 0, "n_orig_correct": 0, "n_flipped": 0, "lo": None, "hi": None})
        c["n"] += r["n"]
        c["n_orig_correct"] += r["n_orig_correct"]
        c["n_flipped"] += r["n_flipped"]
        for key, col, f in (("lo", "magnitude_min", min), ("hi", "magnitude_max", max)):
            if r[col] is not None:
                c[key] = r[col] if c[key] is None else f(c[key], r[col])
    for c in out.values():
        c["flip_rate"] = c["n_flipped"] / c["n_orig_correct"] if c["n_orig_correct"] else None
    return out


def class_spread(rows: list[dict]) -> list[dict]:
    """Per kind, its flip rate per class (pooled over magnitudes) and the classes where it
    is lowest and highest: where a kind treats the classes differently, largest spread first."""
    per: dict[str, dict[str, list[int]]] = {}
    for r in rows:
        c = per.setdefault(r["kind"], {}).setdefault(r["class_name"], [0, 0])
        c[0] += r["n_flipped"]
        c[1] += r["n_orig_correct"]
    out = []
    for kind, by_class in per.items():
        rates = {k: f / n for k, (f, n) in by_class.items() if n}
        if not rates:
            continue
        lo, hi = min(rates, key=rates.get), max(rates, key=rates.get)
        out.append({"kind": kind, "lowest": lo, "lowest_rate": rates[lo], "highest": hi,
                    "highest_rate": rates[hi], "spread": rates[hi] - rates[lo],
                    "by_class": rates})
    return sorted(out, key=lambda x: -x["spread"])


def _plot_heatmap(cells: dict, kinds: list[str], bins: int) -> bytes:
    grid = np.full((len(kinds), bins), np.nan)
    for (kind, b), c in cells.items():
        if c["flip_rate"] is not None:
            grid[kinds.index(kind), b] = c["flip_rate"]
    fig, ax = plt.subplots(figsize=(1.2 * bins + 3, 0.45 * len(kinds) + 1.5))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="magma_r", aspect="auto")
    for i in range(len(kinds)):
        for j in range(bins):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if grid[i, j] > 0.5 else "black")
    ax.set_yticks(range(len(kinds)), kinds)
    ax.set_xticks(range(bins), [str(b) for b in range(bins)])
    lower = [k for k in kinds if (SCALES.get(k) is not None and not SCALES[k].higher)]
    ax.set_xlabel("magnitude bin, low to high magnitude" + (
        f" (stronger at the low end: {', '.join(lower)})" if lower else ""))
    fig.colorbar(im, ax=ax, label="flip rate")
    ax.set_title("Flip rate: of the augmentations whose original the baseline gets right, "
                 "the share it gets wrong", fontsize=9)
    return figure_png(fig)


def _plot_gallery(items: pa.Table, lake: Lake, pool_id: str) -> bytes:
    """Per kind x magnitude cell, its lowest- and highest-AVH augmentation."""
    con = lake.engine()
    try:
        con.register("items", items)
        picks = query_arrow(con, """
            select kind, magnitude_bin, arg_min(aug_id, avh) as easiest, min(avh) as avh_lo,
                   arg_max(aug_id, avh) as hardest, max(avh) as avh_hi
            from items where avh is not null group by all order by all""", None).to_pylist()
    finally:
        con.close()
    ids = [p[k] for p in picks for k in ("easiest", "hardest")]
    aug = lake.read("augmentations", pool_id, columns=PIXEL_COLUMNS)
    index = {a: i for i, a in enumerate(aug.column("aug_id").to_pylist())}
    rows = aug.take(pa.array([index[i] for i in ids]))
    imgs = PoolPixels(lake, pool_id, workers=1).images(rows)
    cols = max(1, min(len(picks), 8))
    nrows = -(-len(picks) // cols)
    fig, axes = plt.subplots(2 * nrows, cols, figsize=(1.5 * cols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for j, p in enumerate(picks):
        r, c = divmod(j, cols)
        for k, a in enumerate(("avh_lo", "avh_hi")):
            im = imgs[2 * j + k]
            ax = axes[2 * r + k, c]
            ax.imshow(im[..., 0] if im.shape[2] == 1 else im, cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{p['kind']} b{p['magnitude_bin']}\nAVH {p[a]:.3f}", fontsize=7)
    fig.suptitle("Each kind x magnitude cell: lowest AVH (upper) and highest AVH (lower)")
    return figure_png(fig)


def baseline_health(lake: Lake, model_id: str) -> dict:
    """The model an atlas judges by: its accuracy (validation, else test) and, when it is too
    weak to judge augmentations by, why (``weak_baseline``; None when it is not)."""
    model = lake.row("models", model_id)
    tried = (model.get("val_acc"), model.get("test_acc"))
    accuracy = next((a for a in tried if a is not None and a == a), None)
    n_classes = len(classes(lake, model["dataset_id"]))
    return {"model_id": model_id, "accuracy": accuracy, "classes": n_classes,
            "weak": weak_baseline(accuracy, n_classes)}


def _interval(k: int, n: int) -> str:
    ci = wilson(k, n)
    return "" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def write_atlas_report(lake: Lake, atlas_id: str, *, command: str | None = None):
    """``reports/<atlas_id>/``: atlas.json, atlas.md, atlas.html and the plots (the flip
    rate's heatmap, each cell's extremes); returns the directory."""
    rows = read_atlas(lake, atlas_id).to_pylist()
    run = {**lake.row("scoring_runs", rows[0]["scoring_run_id"]),
           "scoring_run_id": rows[0]["scoring_run_id"]}
    cells = _by_kind_bin(rows)
    kinds = sorted({k for k, _ in cells})
    bins = max(b for _, b in cells) + 1
    items = _items(lake, run, rows[0]["originals_run_id"], rows[0]["bins"])
    spread = class_spread(rows)
    data = {
        "atlas_id": atlas_id, "scoring_run_id": run["scoring_run_id"],
        "model_id": run["model_id"], "pool_id": run["pool_id"],
        "originals_run_id": rows[0]["originals_run_id"], "git_sha": git_sha(),
        "command": command or (f"smartaug atlas --scoring-run-id {run['scoring_run_id']} "
                               f"--bins {rows[0]['bins']} --storage {lake.url()}"),
        "definitions": (
            "flip_rate = n_flipped / n_orig_correct: of the augmentations whose original the "
            "baseline classifies correctly, the share whose augmentation it classifies wrongly; "
            "confidence_drop_mean: the true class's probability on the original minus on the "
            "augmentation. Magnitudes: smartaug.core.magnitude (a grid pool's bins, else "
            "each kind's range cut into equal bins; a flip has none: bin 0)."),
        "cells": [{"kind": k, "magnitude_bin": b, **c,
                   "flip_rate_ci95": wilson(c["n_flipped"], c["n_orig_correct"])}
                  for (k, b), c in sorted(cells.items())],
        "baseline": baseline_health(lake, run["model_id"]),
        "classes": spread, "rows": rows}
    kind_table = [["kind", "bin", "magnitude", "augmentations", "originals right", "flipped",
                   "flip rate", "95 % interval (Wilson)"],
                  *([k, str(b), "" if c["lo"] is None else f"{c['lo']:.3g}-{c['hi']:.3g}",
                     str(c["n"]), str(c["n_orig_correct"]), str(c["n_flipped"]),
                     "" if c["flip_rate"] is None else f"{c['flip_rate']:.3f}",
                     _interval(c["n_flipped"], c["n_orig_correct"])]
                    for (k, b), c in sorted(cells.items()))]
    class_table = [["kind", "lowest flip rate", "highest flip rate", "spread"],
                   *([s["kind"], f"{s['lowest']} {s['lowest_rate']:.3f}",
                      f"{s['highest']} {s['highest_rate']:.3f}", f"{s['spread']:.3f}"]
                     for s in spread)]
    plots = {"flip_rate": _plot_heatmap(cells, kinds, bins),
             "gallery": _plot_gallery(items, lake, run["pool_id"])}
    return write_report_files(lake, atlas_id, "atlas", data, plots, kinds=kind_table,
                              classes=class_table)


# ------------------------------------------------------------------ the prediction, checked


def predicted_benefit(rows: list[dict], policy: str) -> float | None:
    """The atlas' prediction for an arm's policy: 1 - the flip rate (pooled over the classes)
    of what it draws: ``space:KIND`` all of KIND's rows, ``bin:KIND@B/N`` its bin's (the atlas
    cut into the same N bins); None for any other policy."""
    if policy.startswith("space:") and "," not in policy and "." not in policy:
        cells = [r for r in rows if r["kind"] == policy[len("space:"):]]
    elif policy.startswith("bin:"):
        kind, where = policy[len("bin:"):].split("@")
        b, n = (int(x) for x in where.split("/"))
        if n != rows[0]["bins"] and n != max(r["magnitude_bin"] for r in rows) + 1:
            return None
        cells = [r for r in rows if r["kind"] == kind and r["magnitude_bin"] == b]
    else:
        return None
    right = sum(r["n_orig_correct"] for r in cells)
    return 1.0 - sum(r["n_flipped"] for r in cells) / right if right else None


def check_prediction(lake: Lake, atlas_id: str, study: dict, *, boot: int = 10_000,
                     seed: int = 0) -> dict:
    """How well the atlas ranks what training on each kind alone gains: per arm of
    ``study`` (its study.json) whose policy is one kind (``space:KIND``) or one kind's
    magnitude bin (``bin:KIND@B/N``), the predicted benefit (``predicted_benefit``) against
    the measured gain over ``none`` (the paired mean difference of test accuracy over the
    seeds); Spearman's rank correlation, with a percentile bootstrap interval over the arms
    (``boot`` resamples, seeded)."""
    rows = read_atlas(lake, atlas_id).to_pylist()
    board = study["leaderboard"]
    none = next((r for r in board if r["selector"] == "none"), None)
    if none is None:
        raise AtlasError("the study has no 'none' reference: add references = ['none'] to "
                         "measure each arm's gain over no augmentation")
    base = {(s["replicate"], s["seed"]): s["test_acc"] for s in none["seeds"]}
    arms = []
    for r in board:
        if r.get("kind") != "arm" or not r.get("policy"):
            continue
        pred = predicted_benefit(rows, r["policy"])
        if pred is None:
            continue
        d = [s["test_acc"] - base[(s["replicate"], s["seed"])] for s in r["seeds"]
             if (s["replicate"], s["seed"]) in base]
        arms.append({"arm": r["selector"], "policy": r["policy"], "pool": r["pool"],
                     "budget": r["budget"], "predicted": pred, "gain": float(np.mean(d)),
                     "gain_sd": float(np.std(d, ddof=1)) if len(d) > 1 else None,
                     "n_seeds": len(d)})
    if len(arms) < 3:
        raise AtlasError(f"only {len(arms)} arm(s) train one kind (space:KIND) or one kind's "
                         f"magnitude bin (bin:KIND@B/N): a rank correlation needs at least 3")
    rho, lo, hi, n_boot = rank_agreement([a["predicted"] for a in arms],
                                         [a["gain"] for a in arms], boot=boot, seed=seed)
    return {"atlas_id": atlas_id, "study_id": study["study_id"], "n_arms": len(arms),
            "spearman": rho, "ci95": [lo, hi], "bootstrap": n_boot, "arms": arms,
            "formula": "predicted benefit = 1 - flip rate: of the augmentations (of that kind, "
                       "or of that kind's magnitude bin) whose original the baseline gets "
                       "right, the share it still gets right; measured gain = mean over the "
                       "seeds of (test accuracy of the arm - of 'none'), paired by seed; "
                       "the interval: a percentile bootstrap over the arms"}
