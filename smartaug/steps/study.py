"""The study: which augmentations to keep, at equal budget. One dataset, one baseline model;
for every pool, the baseline scores it, and every selector picks exactly ``round(budget * N)``
of its N augmentations at each budget; every cell (pool, budget, selector, loss, seed) trains
the protocol's model from the originals plus those augmentations and is a row of the ``runs``
table. Like the experiment, a study is a list of steps run by a runner
(``smartaug.steps.runners``: ``LocalRunner``; ``ProcessRunner``, the cells spread over worker
processes; or the Prefect flow, ``smartaug/flows/study.py``); every step finds its output when it
exists, so a crashed study resumes with no repeated work and a finished one does nothing.

Selectors (``StudyConfig``): ``random`` (stratified, a fresh draw per seed;
``random-unstratified`` beside it when windows are not stratified), ``SCORE@POSITION`` (a
window of the hardness ranking), ``coverage-SCORE`` (a fresh draw per seed), and the
references ``none`` and ``all``. ``SCORE@val`` is not a selection of its own: per score, the
position whose ``choose_seeds`` choosing trainings (seeds never reported) score best on
validation, reported with that position's runs. With ``baselines`` = B, everything from the
dataset's validation split to the selections is made B times (replicates), and every cell
is trained in each.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from itertools import groupby

from smartaug.config import (
    CHOOSE_SEED_OFFSET,
    ONLINE_ANCHORS,
    MethodSpec,
    Selector,
    StudyConfig,
    identity,
)
from smartaug.core.curriculum import distinct_shown, pacing_sizes
from smartaug.core.preflight import preflight
from smartaug.errors import InputError
from smartaug.lake import Lake, content_id
from smartaug.lake.readers import pool_config
from smartaug.steps import atlas as atlas_
from smartaug.steps import baseline as baseline_
from smartaug.steps import ingest as ingest_
from smartaug.steps import policy as policy_
from smartaug.steps import pool as pool_
from smartaug.steps import recommend as recommend_
from smartaug.steps import retrain as retrain_
from smartaug.steps import runners as runners_
from smartaug.steps import score as score_
from smartaug.steps import select as S
from smartaug.steps.curriculum import CellCurriculum
from smartaug.steps.runners import ProcessRunner, Runner
from smartaug.steps.sql import query
from smartaug.steps.study_report import leaderboard, write_study_report

__all__ = ["Cell", "plan_cells", "run_study", "study", "study_id"]

Log = Callable[[str], None] | None


@dataclass(frozen=True)
class Cell:
    """One training of the grid: ``pool`` (its name; None for ``none``, the originals only),
    ``budget`` (the fraction of the pool), ``selector`` (``random``, ``SCORE@POSITION``,
    ``coverage-SCORE``, ``all``, ``none``), ``kind`` (random, window, coverage, reference),
    ``n_items`` (augmentations), ``loss`` (ce, avh), ``rep`` (seed = the study's seed + rep),
    ``score`` and ``position`` (a window's, a coverage's score), ``replicate`` (which
    baseline, pools and validation split), ``choose`` (a training that only chooses a
    ``SCORE@val`` position: never reported on test), then, as the study goes,
    ``selection_id``, ``pool_id`` and ``run_id``."""

    pool: str | None
    budget: float
    selector: str
    kind: str
    n_items: int
    loss: str
    rep: int
    score: str | None = None
    position: str | None = None
    selection_id: str | None = None
    pool_id: str | None = None
    run_id: str | None = None
    selection_seconds: float | None = None  # what making its selection cost (0: shared)
    replicate: int = 0
    choose: bool = False


def study_id(cfg: StudyConfig) -> str:
    """The study's content id: its config without the choices that do not change what it
    computes (``identity``; ``stack``: cells trained together give the figures of cells
    trained alone, up to rounding)."""
    d = cfg.to_dict()
    d.pop("stack", None)
    return content_id("study", identity(d))


def protocol_id(cfg: StudyConfig, dataset_id: str, model_id: str) -> str:
    """What every cell's training shares (the runs' ``experiment_id``): a cell trained once
    is found again by any study of the same dataset, baseline and model."""
    return content_id("protocol", {"dataset_id": dataset_id, "baseline_model_id": model_id,
                                   "model": cfg.model, "init": cfg.init})


# ------------------------------------------------------------------ the steps


def finished(lake: Lake, cfg: StudyConfig, *, log: Log = None) -> str | None:
    """The report's location when this study is recorded and reported (then there is
    nothing to do; a deleted report is written again, every cell found)."""
    sid = study_id(cfg)
    if lake.has("studies", sid) and lake.fs.exists(str(lake.location("reports", sid,
                                                                      "study.json"))):
        return lake.url("reports", sid)
    return None


def data_of(cfg: StudyConfig, b: int = 0):
    """Replicate ``b``'s data: the study's, with validation split ``b`` (0: the seed's own)."""
    return cfg.data if b == 0 else replace(cfg.data, val_split=b)


def ingest(lake: Lake, cfg: StudyConfig, b: int = 0, *, log: Log = None) -> str:
    """Load replicate ``b``'s dataset (its validation split) into the samples table."""
    return ingest_.ingest(lake, data_of(cfg, b))


def baseline(lake: Lake, cfg: StudyConfig, dataset_id: str, b: int = 0, *, log: Log = print
             ) -> str:
    """Train and register replicate ``b``'s baseline model (seed ``seed + b``) that scores
    its pools (a study that must choose window positions on validation is refused first
    when the split came out empty)."""
    meta = lake.row("datasets", dataset_id)
    anchors = [a for a in cfg.arms if a.policy in ONLINE_ANCHORS]
    if anchors and meta["channels"] not in (1, 3):
        raise InputError(f"arm {anchors[0].name}: {anchors[0].policy} takes images of 1 or 3 "
                         f"channels, and dataset {dataset_id}'s have {meta['channels']}; "
                         f"give the arm a policy file or a space instead")
    if cfg.chooses() and not meta["n_val"]:
        raise S.SelectionError(
            f"dataset {dataset_id} has no validation images ({meta['n_train']} train images, "
            f"val_fraction {cfg.data.val_fraction:g}), so no window position can be chosen "
            f"without the test split: give more images per class (--per-class-train) or a "
            f"larger data.val_fraction, or a single position")
    return baseline_.train_baseline(lake, dataset_id, arch=cfg.model,
                                    cfg=replace(cfg.baseline, seed=cfg.seed + b), log=log)


def pool(lake: Lake, cfg: StudyConfig, dataset_id: str, name: str, b: int = 0, *,
         log: Log = None) -> str:
    """Generate one of the study's pools (replicate ``b``: its seed + ``b``)."""
    spec = next(p for p in cfg.pools if p.name == name)
    return pool_.build_pool(lake, dataset_id, replace(spec.augment,
                                                      seed=spec.augment.seed + b))


def score(lake: Lake, cfg: StudyConfig, model_id: str, pool_id: str, *, log: Log = None
          ) -> str:
    """Score a pool with the baseline (AVH and the other hardness scores)."""
    return score_.score_pool(lake, model_id, pool_id, device=cfg.retrain.device, trust=cfg.model)


def plan_cells(cfg: StudyConfig, name: str, n_pool: int, reps: range | None = None
               ) -> list[Cell]:
    """The cells of pool ``name`` (``n_pool`` augmentations), without their selections: its
    rows of ``cfg.grid()`` that train (not ``SCORE@val``, the runs of a window; not ``none``,
    the study's and no pool's), each at every seed (``reps``, default the study's seeds) and,
    in the first round, each window's trainings that choose ``SCORE@val`` positions. Raises
    SelectionError when a budget rounds to no augmentation."""
    cells = []
    choosing = reps is None and cfg.chooses()
    reps = range(cfg.seeds) if reps is None else reps
    rows = [g for g in cfg.grid() if g.pool == name and g.selector.kind not in ("chosen",
                                                                                  "none")]
    for (budget, sel), same in groupby(rows, key=lambda g: (g.budget, g.selector)):
        n = _cell_items(cfg, name, n_pool, budget, sel)
        matched = sel.kind == "arm" and next(a for a in cfg.arms if a.name == sel.arm
                                             ).source == "matched"
        seeds = [reps]
        if choosing and sel.kind == "window":
            seeds.append(range(CHOOSE_SEED_OFFSET, CHOOSE_SEED_OFFSET + cfg.choose_seeds))
        losses = [g.loss for g in same]
        cells += [Cell(pool=name, budget=budget, selector=sel.name,
                       kind="random" if matched else sel.family,
                       n_items=n, loss=loss, rep=rep, score=sel.score, position=sel.position,
                       choose=i > 0)
                  for i, rs in enumerate(seeds) for loss in losses for rep in rs]
    return cells


def _cell_items(cfg: StudyConfig, name: str, n_pool: int, budget: float, sel) -> int:
    """The augmentations a cell of ``sel`` at ``budget`` trains on: ``round(budget * n_pool)``
    (a matched arm: as many distinct ones as its schedule shows). SelectionError when that
    is none; ConfigError when a schedule cannot spend it."""
    n = round(budget * n_pool)
    if n < 1:
        raise S.SelectionError(f"budget {budget} of pool {name!r} ({n_pool} augmentations) is "
                               f"no augmentation at all; raise the budget to at least "
                               f"{1 / n_pool:.2g}")
    arm = next((a for a in cfg.arms if a.name == sel.arm), None)
    if arm is not None and arm.source == "matched":  # a static random selection
        target = next(a for a in cfg.arms if a.name == arm.matches)
        return distinct_shown(target.pacing, cfg.retrain.epochs, n, n_pool, start=target.start,
                              growth=target.growth, step=target.step)
    if arm is not None and arm.source == "schedule":  # refused here if it cannot spend it
        pacing_sizes(arm.pacing, cfg.retrain.epochs, n, n_pool, start=arm.start,
                     growth=arm.growth, step=arm.step)
    return n


def select(lake: Lake, cfg: StudyConfig, name: str, scoring_run_id: str,
           reps: range | None = None, only: frozenset | None = None, *, log: Log = None
           ) -> list[Cell]:
    """Every selection of one pool (DuckDB, ``sql/``): its cells, each with its
    ``selection_id``. Windows are deterministic; random and coverage draw once per seed.
    ``reps`` and ``only`` ((budget, selector, loss) keys): the cells of a later round."""
    n_pool = lake.row("scoring_runs", scoring_run_id)["n_items"]
    cells = plan_cells(cfg, name, n_pool, reps)
    if only is not None:
        cells = [c for c in cells if (c.budget, c.selector, c.loss) in only]
    for c in cfg.scores + cfg.coverage:  # a score the run lacks: refused before any training
        S.class_counts(lake, scoring_run_id, c)
    out, memo = [], {}
    for c in cells:
        if c.kind == "arm":  # no selection: its augmentations are drawn while it trains
            out.append(replace(c, selection_seconds=0.0))
            continue
        seed = cfg.seed + c.rep
        key = (c.selector, c.budget, None if c.kind in ("window", "reference") else seed)
        if key in memo:  # the same selection for every loss (and every seed of a window)
            out.append(replace(c, selection_id=memo[key], selection_seconds=0.0))
            continue
        t0 = time.perf_counter()
        rule = Selector("random") if c.kind == "random" and c.selector != \
            "random-unstratified" else Selector.parse(c.selector)  # a matched arm: random
        sel = S.pick(lake, scoring_run_id, rule, c.n_items, budget=c.budget, seed=seed,
                     per_class=cfg.per_class, drop=cfg.coverage_drop, bins=cfg.coverage_bins)
        memo[key] = sel
        out.append(replace(c, selection_id=sel, selection_seconds=time.perf_counter() - t0))
    return out


def cell(lake: Lake, cfg: StudyConfig, dataset_id: str, pool_id: str, model_id: str,
         c: Cell, *, log: Log = None) -> str:
    """Train one cell: the protocol's model on the originals + the cell's selection, at seed
    ``cfg.seed + rep``; returns run_id (found, not retrained, when it exists)."""
    data = retrain_.training_data(lake, dataset_id, pool_id)
    m = MethodSpec(c.selector, loss=cfg.loss_spec(c.loss))
    protocol = replace(cfg, data=data_of(cfg, c.replicate)).protocol()
    curriculum = None
    if c.kind == "arm":
        arm = next(a for a in cfg.arms if a.name == c.selector)
        if arm.source == "policy":
            policy = arm_policy(lake, cfg, arm, pool_id, model_id)
            protocol = replace(protocol, retrain=replace(
                protocol.retrain, augment="online", policy=policy, augmentations=c.n_items))
        else:
            curriculum = CellCurriculum(
                lake, arm, data, pool_id=pool_id, n=c.n_items, epochs=cfg.retrain.epochs,
                scoring_run_id=score_.pool_scoring_run_id(model_id, pool_id,
                                                          cfg.retrain.device),
                per_class=cfg.per_class)
    return retrain_.train_cell(lake, protocol,
                               experiment_id=protocol_id(cfg, dataset_id, model_id), data=data,
                               method=m, selection_id=c.selection_id, rep=c.rep,
                               baseline_model_id=model_id, purpose="study", log=log,
                               eval_last=True, curriculum=curriculum)


def stack_refusal(lake: Lake, cfg: StudyConfig, model_id: str, *, log: Log = None
                  ) -> str | None:
    """Why this study's cells cannot train as one model (its model is not a LeNet, ...), or
    None when they can."""
    return retrain_.stack_refusal(lake, cfg.protocol(), model_id)


def cells(lake: Lake, cfg: StudyConfig, dataset_id: str, pool_id: str, model_id: str,
          group: tuple[Cell, ...], *, log: Log = None) -> list[str]:
    """Train ``group`` (cells of one training-set size, not arms) as one model
    (``retrain.train_cells``); returns their run_ids (each found, not retrained, when it
    exists)."""
    data = retrain_.training_data(lake, dataset_id, pool_id)
    protocol = replace(cfg, data=data_of(cfg, group[0].replicate)).protocol()
    return retrain_.train_cells(
        lake, protocol, experiment_id=protocol_id(cfg, dataset_id, model_id), data=data,
        cells=[(MethodSpec(c.selector, loss=cfg.loss_spec(c.loss)), c.selection_id, c.rep)
               for c in group],
        baseline_model_id=model_id, purpose="study", log=log, eval_last=True)


def arm_policy(lake: Lake, cfg: StudyConfig, arm, pool_id: str, model_id: str) -> str:
    """The online policy an arm trains with at a pool: ``uniform`` = the pool's kinds
    (``space:KIND,...``), ``recommended`` = ``smartaug recommend``'s policy file for the
    pool's dataset with the study's model and training (raced here once, found after),
    ``atlas-only`` = the policy file of the pool's atlas (made here once, found after),
    anything else as the arm names it."""
    if arm.policy == "uniform":
        pool_cfg = pool_config(lake.row("pools", pool_id))
        if pool_cfg.space or pool_cfg.max_angle != 20.0 or pool_cfg.sigma != 0.1:
            raise InputError(f"arm {arm.name}: policy 'uniform' draws the pool's built-in "
                             f"kinds at their default parameters, and pool {pool_id} has a "
                             f"space file or other parameters; give the arm a policy file")
        return "space:" + ",".join(pool_cfg.kinds)
    if arm.policy == "recommended":
        return recommended_policy(lake, cfg, lake.row("pools", pool_id)["dataset_id"])
    if arm.policy != "atlas-only":
        return arm.policy
    run = score_.pool_scoring_run_id(model_id, pool_id, cfg.retrain.device)
    atlas_id = atlas_.build_atlas(lake, run, trust=cfg.model)
    out = lake.local_path("policies") / f"{atlas_id}-max-flip-{arm.max_flip:g}.json"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        policy_.write_policy(lake, atlas_id, out, arm.max_flip)
    return str(out)


def recommended_policy(lake: Lake, cfg: StudyConfig, dataset_id: str) -> str:
    """``smartaug recommend``'s policy file for ``dataset_id`` with the study's model and
    training (its epochs, batch size, optimizer and seed), at the default budget: raced once,
    kept in the lake's ``policies`` folder under the race's content id."""
    protocol = replace(cfg.retrain, seed=cfg.seed)
    spec = {"model": cfg.model, "protocol": protocol.to_dict(), "seed": cfg.seed,
            "budget": recommend_.DEFAULT_BUDGET}
    rid = recommend_.recommendation_id(dataset_id, **spec)
    out = lake.local_path("policies") / f"recommend-{rid}.json"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        recommend_.write_recommendation(lake, dataset_id, out, model=cfg.model,
                                        protocol=protocol, seed=cfg.seed,
                                        device=cfg.retrain.device)
    return str(out)


def record(lake: Lake, cfg: StudyConfig, replicates: list[dict], cells: list[Cell],
           seconds: float, *, log: Log = None) -> str:
    """Record the study: its config, pools (with, for B > 1 replicates, each replicate's
    dataset, baseline, pool and scoring run) and every cell with its run; returns its id."""
    sid = study_id(cfg)
    first = replicates[0]
    pools = {name: dict(ids) for name, ids in first["pools"].items()}
    if len(replicates) > 1:
        for name in pools:
            pools[name]["replicates"] = [
                {"replicate": r["replicate"], "dataset_id": r["dataset_id"],
                 "baseline_model_id": r["baseline_model_id"], **r["pools"][name]}
                for r in replicates]
    if not lake.has("studies", sid):
        lake.write("studies", sid, {
            "study_id": [sid], "preset": [cfg.preset],
            "config": [json.dumps(cfg.to_dict(), default=str)],
            "dataset_id": [first["dataset_id"]], "baseline_model_id": [first["baseline_model_id"]],
            "pools": [json.dumps(pools)],
            "cells": [json.dumps([asdict(c) for c in cells])], "seconds": [seconds]})
    return sid


def report(lake: Lake, cfg: StudyConfig, sid: str, command: str, *, log: Log = None) -> str:
    """Write the study's report; returns its location."""
    write_study_report(lake, sid, command=command)
    return lake.url("reports", sid)


# ------------------------------------------------------------------ the order


def study(cfg: StudyConfig, runner: Runner, *, command: str, log: Log = print
          ) -> tuple[str, str]:
    """Run every step of the study; returns (study_id, report location). A finished study
    is found and nothing runs."""
    preflight(cfg)
    done = runner.call(finished, cfg)
    if done is not None:
        if log:
            log(f"study {study_id(cfg)} is complete; nothing to do")
        return study_id(cfg), done
    t0 = time.perf_counter()
    replicates, cells = [], []
    for b in range(cfg.baselines):  # replicate b: its split, baseline, pools and selections
        dataset_id = runner.call(ingest, cfg, b)
        model_id = runner.call(baseline, cfg, dataset_id, b)
        pools = {}
        for p in cfg.pools:
            pool_id = runner.call(pool, cfg, dataset_id, p.name, b)
            scoring_run_id = runner.call(score, cfg, model_id, pool_id)
            pools[p.name] = {"pool_id": pool_id, "scoring_run_id": scoring_run_id}
            cells += [replace(c, pool_id=pool_id, replicate=b)
                      for c in runner.call(select, cfg, p.name, scoring_run_id)]
        if "none" in cfg.references:  # originals only: one set of runs for every pool
            first = pools[cfg.pools[0].name]["pool_id"]
            cells += [Cell(pool=None, budget=0.0, selector="none", kind="reference", n_items=0,
                           loss=loss, rep=rep, pool_id=first, replicate=b)
                      for loss in cfg.losses for rep in range(cfg.seeds)]
        replicates.append({"replicate": b, "dataset_id": dataset_id,
                           "baseline_model_id": model_id, "pools": pools})
    stack = cfg.stack
    if stack > 1:
        why = runner.call(stack_refusal, cfg, replicates[0]["baseline_model_id"])
        if why:
            stack = 1
            if log:
                log(f"stack {cfg.stack}: every cell trains alone ({why})")
    cells = train_grid(runner, cfg, replicates, cells, stack)
    ran = replace(cfg, stack=stack)  # what ran: the stack the cells trained in (same id)
    for n in cfg.looks()[1:]:  # seeds until decided: rounds for the undecided hypotheses only
        needed = runner.call(undecided, cfg, cells)
        if not needed:
            break
        have = max(c.rep for c in cells if not c.choose) + 1
        if log:
            log(f"round: {len(needed)} hypothesis cell group(s) undecided at {have} seeds; "
                f"adding seeds {have}..{n - 1}" + (f" in each of {cfg.baselines} replicates"
                                                   if cfg.baselines > 1 else ""))
        new = []
        for r in replicates:
            for p in cfg.pools:
                keys = frozenset((b, s, loss) for pool, b, s, loss in needed if pool == p.name)
                if keys:
                    ids = r["pools"][p.name]
                    new += [replace(c, pool_id=ids["pool_id"], replicate=r["replicate"])
                            for c in runner.call(select, cfg, p.name, ids["scoring_run_id"],
                                                 range(have, n), keys)]
        cells += train_grid(runner, cfg, replicates, new, stack)
    sid = runner.call(record, ran, replicates, cells, time.perf_counter() - t0)
    return sid, runner.call(report, cfg, sid, command)


def grid_groups(cells: list[Cell], stack: int) -> list[list[int]]:
    """``cells`` (indices) as the units of work, the largest first (the workers finish
    together): one cell each, or with ``stack`` > 1 the cells of one replicate, pool and
    size (arms apart) in groups of at most ``stack``, as even as the count allows."""
    order = sorted(range(len(cells)), key=lambda i: -cells[i].n_items)
    if stack <= 1:
        return [[i] for i in order]
    buckets: dict[tuple, list[int]] = {}
    for i in order:
        c = cells[i]
        buckets.setdefault((c.replicate, c.pool_id, c.n_items) if c.kind != "arm" else
                           ("arm", i), []).append(i)
    groups = [g for members in buckets.values() for g in retrain_.spread(members, stack)]
    return sorted(groups, key=lambda g: -cells[g[0]].n_items * len(g))


def train_grid(runner: Runner, cfg: StudyConfig, replicates: list[dict], cells_: list[Cell],
               stack: int = 1) -> list[Cell]:
    """Train ``cells_`` (``grid_groups``: alone, or ``stack`` at a time as one model), each in
    its replicate (``replicates``: dataset and baseline); with their run ids."""
    groups = grid_groups(cells_, stack)

    def args(g):
        c = cells_[g[0]]
        r = replicates[c.replicate]
        return (cfg, r["dataset_id"], c.pool_id, r["baseline_model_id"])

    alone = [stack <= 1 or cells_[g[0]].kind == "arm" for g in groups]
    lone = [g for g, a in zip(groups, alone, strict=True) if a]
    together = [g for g, a in zip(groups, alone, strict=True) if not a]
    out = list(cells_)
    if together:
        ids = runner.map(cells, [(*args(g), tuple(cells_[i] for i in g)) for g in together])
        for g, run_ids in zip(together, ids, strict=True):
            for i, run_id in zip(g, run_ids, strict=True):
                out[i] = replace(out[i], run_id=run_id)
    if lone:
        ids = runner.map(cell, [(*args(g), cells_[g[0]]) for g in lone])
        for g, run_id in zip(lone, ids, strict=True):
            out[g[0]] = replace(out[g[0]], run_id=run_id)
    return out


def undecided(lake: Lake, cfg: StudyConfig, cells: list[Cell], *, log: Log = None
              ) -> list[tuple]:
    """The (pool, budget, selector, loss) cell groups the still-undecided hypotheses need
    (their selector, every position of an ``@val`` one, and random), judged by the report's
    own ``leaderboard`` on the test accuracies so far."""
    rows = query(lake, "study_runs", ids=[c.run_id for c in cells]).to_pylist()
    _, _, decided = leaderboard(cfg, [asdict(c) for c in cells],
                                {r["run_id"]: r for r in rows}, family=False)
    needed: list[tuple] = []
    for h in decided:
        if h["decision"] != "undecided":
            continue
        sel = Selector.parse(h["selector"], [a.name for a in cfg.arms])
        selectors = [sel.name]
        if sel.kind == "chosen":  # reported with its chosen position's runs
            selectors = [Selector("window", sel.score, p).name for p in cfg.positions]
        needed += [(h["pool"], h["budget"], s, h["loss"]) for s in selectors]
        needed.append((h["pool"], h["against_budget"], h["against"], h["loss"]))
    return sorted(set(needed))


WORKERS_ENV = runners_.WORKERS_ENV


def default_workers(cfg: StudyConfig) -> int:
    """``runners.default_workers`` for the study's device."""
    return runners_.default_workers(cfg.retrain.device)


def run_study(cfg: StudyConfig, lake: Lake, *, workers: int | None = None, log: Log = print,
              command: str | None = None) -> tuple[str, str]:
    """Run the study here (cells over ``workers`` processes, default one per core); returns
    (study_id, report location)."""
    command = command or f"smartaug study --preset {cfg.preset}"
    workers = default_workers(cfg) if workers is None else workers
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    with ProcessRunner(lake, workers, log) as runner:
        return study(cfg, runner, command=command, log=log)
