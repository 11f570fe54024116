"""``smartaug study --plan``: what a study file will cost and what it can detect, before any
training and with no lake written.

The cells and trainings come from the grid itself (``plan_cells``, the pools' sizes from
the dataset, loaded as ingest would load it); the time from a one-epoch training of the
study's model on the machine (images a second, times the workers); the detectable
difference of each declared hypothesis from a stated prior spread (``sd_prior`` in the
file, or a pilot study's report) by the exact noncentral t (``smartaug.core.stats.planned``)
at the level of each look of the design and at its own share of the family's alpha.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from smartaug.config import StudyConfig, load_study, parse_policy
from smartaug.core.datasets import load_dataset
from smartaug.core.stats import family_alphas, planned, spending_levels, two_level
from smartaug.core.train import build_model, train
from smartaug.errors import InputError
from smartaug.steps.study import plan_cells
from smartaug.steps.study_report import whole_pool

__all__ = ["describe", "plan_study"]


def _images_per_second(cfg: StudyConfig, shape: tuple[int, int, int], classes: int) -> float:
    """A one-epoch training of the study's model on random images of the dataset's shape:
    the retraining protocol's images a second on this machine, one process."""
    h, _, c = shape
    n = max(4 * cfg.retrain.batch_size, 2048)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, h, h, c), dtype=np.uint8)
    y = rng.integers(0, classes, n)
    model = build_model(cfg.model, classes, c, h, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a study's worker trains: one thread a process
    one = replace(cfg.retrain, epochs=1, device="cpu", augment="static", policy=None,
                  augmentations=None)
    try:
        train(model, x[: 2 * one.batch_size], y[: 2 * one.batch_size], one, log=None)  # warm
        t0 = time.perf_counter()
        train(model, x, y, one, log=None)
        return n / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)


def _pilot_spread(pilot: dict, h) -> tuple[float | None, float | None, str]:
    """(sd_within, sd_between, where from) of hypothesis ``h``'s comparison in a pilot
    study's report: its declared hypothesis if it has the same one, else the two rows'
    per-seed values."""
    for ph in pilot.get("hypotheses") or ():
        if (ph["selector"], ph.get("against", "random"), ph["pool"], ph["budget"]) == \
                (h.selector, h.against, h.pool, h.budget) and ph.get("sd_within"):
            return ph["sd_within"], ph.get("sd_between"), "pilot hypothesis"
    rows = {(r["pool"], r["budget"], r["selector"], r["loss"]): r
            for r in pilot.get("leaderboard") or ()}
    a = rows.get((h.pool, h.budget, h.selector, h.loss))
    b = rows.get((h.pool, 1.0 if h.against in whole_pool(load_study(pilot["config"])) else h.budget,
                  h.against, h.loss))
    if a and b and "seeds" in a and "seeds" in b:
        other = {(s["replicate"], s["seed"]): s["test_acc"] for s in b["seeds"]}
        d = {(s["replicate"], s["seed"]): s["test_acc"] - other[(s["replicate"], s["seed"])]
             for s in a["seeds"] if (s["replicate"], s["seed"]) in other}
        tl = two_level(d)
        if tl["sd_within"]:
            return tl["sd_within"], tl["sd_between"], "pilot rows"
    return None, None, "none"


def plan_study(cfg: StudyConfig, *, pilot: str | Path | None = None,
               workers: int | None = None, measure: bool = True) -> dict:
    """The plan of ``cfg``: cells, trainings (at the first look and at most), the estimated
    time, and per declared hypothesis its alpha, the level at each look and the smallest
    true difference each look detects with 80 % power from the prior spread. ``pilot``: a
    study.json whose spread stands in for ``sd_prior``; ``measure`` = False skips the timing
    (no time estimate)."""
    pilot_report = None
    if pilot is not None:
        path = Path(pilot)
        path = path / "study.json" if path.is_dir() else path
        if not path.is_file():
            raise InputError(f"--pilot {pilot}: no study.json there; give a study's report "
                             f"(its directory or its study.json)")
        try:
            pilot_report = json.loads(path.read_text())
        except ValueError as e:
            raise InputError(f"--pilot {pilot}: {path} is not JSON ({e}); give a study's "
                             f"report") from None
        if not isinstance(pilot_report, dict) or "leaderboard" not in pilot_report:
            raise InputError(f"--pilot {pilot}: {path} is not a study's report (no "
                             f"leaderboard)")
    ds = load_dataset(cfg.data, download=False)
    n_train, classes = len(ds.train), len(ds.classes)
    shape = ds.train.images.shape[1:]
    reps = cfg.baselines
    sizes, first, most = {}, [], 0
    whole = whole_pool(cfg)
    hyp_keys = {k for _, h in cfg.hypotheses() for k in (
        (h.pool, h.budget, h.selector, h.loss),
        (h.pool, 1.0 if h.against in whole else h.budget, h.against, h.loss))}
    for p in cfg.pools:
        n_pool = n_train * parse_policy(p.augment.policy, len(p.augment.kinds))
        sizes[p.name] = n_pool
        cells = plan_cells(cfg, p.name, n_pool)
        first += cells
        extra = range(cfg.seeds, cfg.max_seeds or cfg.seeds)
        more = [c for c in plan_cells(cfg, p.name, n_pool, extra)
                if (c.pool, c.budget, c.selector, c.loss) in hyp_keys] if len(extra) else []
        most += len(more)
    none = len(cfg.losses) * cfg.seeds if "none" in cfg.references else 0
    n_first = reps * (len(first) + none)
    n_most = n_first + reps * most
    images = reps * (sum(n_train + c.n_items for c in first) + none * n_train)
    workers = workers or int(os.environ.get("SMARTAUG_WORKERS", 0)) or os.cpu_count() or 1
    out = {"cells_first_look": n_first, "trainings_first_look": n_first + reps,
           "trainings_at_most": n_most + reps, "baselines": reps, "n_train": n_train,
           "classes": classes, "pool_sizes": sizes, "workers": workers,
           "images_per_second": None, "seconds_first_look": None, "seconds_at_most": None,
           "hypotheses": []}
    if measure:
        ips = _images_per_second(cfg, shape, classes)
        per = cfg.retrain.epochs / (ips * workers)
        base = reps * n_train * cfg.baseline.epochs / ips
        avg = images / max(n_first, 1)
        out.update(images_per_second=ips, seconds_first_look=base + images * per,
                   seconds_at_most=base + (images + reps * most * avg) * per)
    looks = cfg.looks()
    a_primary, a_secondary = family_alphas(len(cfg.secondary))
    for role, h in cfg.hypotheses():
        alpha = a_primary if role == "primary" else a_secondary
        levels = spending_levels(looks, alpha)
        within, between, source = h.sd_prior, None, "sd_prior"
        if within is None and pilot_report is not None:
            within, between, source = _pilot_spread(pilot_report, h)
        det = [planned(within, between, n, reps, lv) for n, lv in zip(looks, levels,
                                                                       strict=True)]
        out["hypotheses"].append({
            "role": role, "selector": h.selector, "against": h.against, "pool": h.pool,
            "budget": h.budget, "margin": h.margin, "alpha": alpha, "looks": looks,
            "levels": levels, "sd_within": within, "sd_between": between,
            "spread_from": source if within is not None else None, "detectable": det,
            "reaches_margin_at": next((n for n, d in zip(looks, det, strict=True)
                                       if d is not None and d <= h.margin), None)})
    return out


def describe(plan: dict) -> list[str]:
    """The plan as lines for a terminal."""
    lines = [f"{plan['n_train']} training originals, {plan['classes']} classes; pools "
             + ", ".join(f"{k} {v}" for k, v in plan["pool_sizes"].items()),
             f"{plan['baselines']} baseline(s); {plan['cells_first_look']} cells at the first "
             f"look; {plan['trainings_first_look']} trainings then, "
             f"{plan['trainings_at_most']} at most (every look)"]
    if plan["seconds_first_look"] is not None:
        lines.append(f"about {plan['seconds_first_look'] / 60:.1f} min to the first look, "
                     f"{plan['seconds_at_most'] / 60:.1f} min at most, on {plan['workers']} "
                     f"worker(s) at {plan['images_per_second']:.0f} images/s each (measured "
                     f"now; evaluation and scoring not counted)")
    for h in plan["hypotheses"]:
        head = (f"{h['role']}: {h['selector']} vs {h['against']} ({h['pool']} pool, budget "
                f"{h['budget']:g}, margin {100 * h['margin']:.2g} points, alpha "
                f"{h['alpha']:.3g})")
        if h["sd_within"] is None:
            lines.append(head + ": no prior spread; give sd_prior in the hypothesis or "
                         "--pilot a study's report")
            continue
        lines.append(head + f", spread {100 * h['sd_within']:.2g} points a seed (from "
                     f"{h['spread_from']}):")
        lines += [f"  look {i + 1} ({n} seeds, level {100 * lv:.6g} %): detects "
                  + ("-" if d is None else f"{100 * d:.2f} points")
                  for i, (n, lv, d) in enumerate(zip(h["looks"], h["levels"], h["detectable"],
                                                     strict=True))]
        lines.append("  " + (f"reaches the margin at {h['reaches_margin_at']} seeds"
                             if h["reaches_margin_at"] else
                             "never reaches the margin within max_seeds: add seeds or "
                             "replicates, or widen the margin"))
    return lines
