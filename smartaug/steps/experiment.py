"""The experiment as one list of steps (``experiment``), run by either of two runners:
``LocalRunner`` in this process (``run_experiment``, the CLI) or the Prefect flow
(``smartaug/flows/smart_augmentation.py``: each step a task, with caching, retries and workers). A step
is ``step(lake, cfg, *ids, log=...)``: it reads the lake, calls one step function, writes its
table and returns an id. Ids are content hashes, so a rerun resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace

from smartaug.config import ExperimentConfig, identity
from smartaug.core.preflight import preflight
from smartaug.errors import ConfigError
from smartaug.lake import Lake, content_id
from smartaug.steps import baseline as baseline_
from smartaug.steps import ingest as ingest_
from smartaug.steps import pool as pool_
from smartaug.steps import retrain as retrain_
from smartaug.steps import score as score_
from smartaug.steps.report import write_report
from smartaug.steps.runners import LocalRunner, ProcessRunner, Runner, default_workers

__all__ = ["LocalRunner", "Runner", "experiment", "experiment_id", "run_experiment",
           "score_shards"]

Log = Callable[[str], None] | None


def experiment_id(cfg: ExperimentConfig) -> str:
    """The config's content id; a stacked experiment's says so (its runs are other runs)."""
    d = identity(cfg.to_dict())
    return content_id("experiment", {**d, "trainer": "stacked"} if cfg.stack > 1 else d)


def score_shards() -> int:
    """Shards of the pool's scoring (``SMARTAUG_SCORE_SHARDS``, default 1 = one step)."""
    value = os.environ.get("SMARTAUG_SCORE_SHARDS", "1")
    if not value.strip().isdigit() or int(value) < 1:
        raise ConfigError(f"SMARTAUG_SCORE_SHARDS must be a positive integer, got {value!r}")
    return int(value)


# ------------------------------------------------------------------ the steps


def ingest(lake: Lake, cfg: ExperimentConfig, *, log: Log = None) -> str:
    """Load the dataset into the samples table."""
    return ingest_.ingest(lake, cfg.data)


def baseline(lake: Lake, cfg: ExperimentConfig, dataset_id: str, *, log: Log = print) -> str:
    """Train and register the baseline model."""
    return baseline_.train_baseline(lake, dataset_id, arch=cfg.model,
                                    cfg=replace(cfg.baseline, seed=cfg.seed), log=log)


def pool(lake: Lake, cfg: ExperimentConfig, dataset_id: str, *, log: Log = None) -> str:
    """Generate the augmentation pool."""
    return pool_.build_pool(lake, dataset_id, cfg.augment)


def score_originals(lake: Lake, cfg: ExperimentConfig, model_id: str, dataset_id: str, *,
                    log: Log = None) -> list[str]:
    """Score the original train and test images (for the report)."""
    return [score_.score_split(lake, model_id, dataset_id, split, device=cfg.retrain.device, trust=cfg.model)
            for split in ("train", "test")]


def score(lake: Lake, cfg: ExperimentConfig, model_id: str, pool_id: str, *, log: Log = None
          ) -> str:
    """Score the pool by AVH and the other hardness scores."""
    return score_.score_pool(lake, model_id, pool_id, device=cfg.retrain.device, trust=cfg.model)


def score_shard(lake: Lake, cfg: ExperimentConfig, model_id: str, pool_id: str, shard: int,
                n_shards: int, *, log: Log = print) -> str:
    """Score one shard of the pool into the staging area."""
    return score_.score_pool_shard(lake, model_id, pool_id, shard, n_shards,
                                   device=cfg.retrain.device, trust=cfg.model)


def commit_shards(lake: Lake, cfg: ExperimentConfig, model_id: str, pool_id: str,
                  n_shards: int, *, log: Log = print) -> str:
    """Publish the scored shards as one scoring run."""
    return score_.commit_pool_shards(lake, model_id, pool_id, n_shards,
                                     device=cfg.retrain.device)


def choose(lake: Lake, cfg: ExperimentConfig, dataset_id: str, pool_id: str,
           scoring_run_id: str, model_id: str, *, log: Log = print) -> dict:
    """The band search on validation (if configured), then one selection per method."""
    return retrain_.choose(lake, cfg, experiment_id(cfg), dataset_id, pool_id, scoring_run_id,
                           model_id, log)


def cell(lake: Lake, cfg: ExperimentConfig, dataset_id: str, pool_id: str, model_id: str,
         chosen: dict, method: str, rep: int, *, log: Log = print) -> str:
    """One cell of the retraining grid: one method, one seed."""
    effective = retrain_.with_band(cfg, chosen["band"])
    m = next(x for x in effective.methods if x.name == method)
    data = retrain_.training_data(lake, dataset_id, pool_id)
    return retrain_.train_cell(lake, effective, experiment_id=experiment_id(cfg), data=data,
                               method=m, selection_id=chosen["selections"][method], rep=rep,
                               baseline_model_id=model_id, log=log,
                               eval_last=retrain_.curves_on(data))


def plan(lake: Lake, cfg: ExperimentConfig, model_id: str, chosen: dict, *,
         log: Log = print) -> list[list[tuple[str, int]]]:
    """The retraining grid as units of work, each a list of (method, rep): with ``stack`` > 1
    the cells of one training-set size (every seed of a method, and methods of one size
    together: M1 and M2) in groups of at most ``stack``; one cell each where the model cannot
    be stacked (said in one line) or ``stack`` is 1."""
    cells = [(m.name, rep) for rep in range(cfg.reps) for m in cfg.methods]
    if cfg.stack <= 1:
        return [[c] for c in cells]
    why = retrain_.stack_refusal(lake, cfg, model_id)
    if why:
        if log:
            log(f"stack {cfg.stack}: every training alone ({why})")
        return [[c] for c in cells]
    sizes = {m: 0 if sid is None else lake.count("selections", sid)
             for m, sid in chosen["selections"].items()}
    buckets: dict[int, list[tuple[str, int]]] = {}
    for c in cells:
        buckets.setdefault(sizes[c[0]], []).append(c)
    return [g for size in sorted(buckets, reverse=True)
            for g in retrain_.spread(buckets[size], cfg.stack)]


def cells(lake: Lake, cfg: ExperimentConfig, dataset_id: str, pool_id: str, model_id: str,
          chosen: dict, group: list[tuple[str, int]], *, log: Log = print) -> list[str]:
    """One unit of the grid (``plan``): a lone cell (``cell``), or cells of one size trained
    as one model (``retrain.train_cells``); each found, not retrained, when it exists."""
    if len(group) == 1:
        return [cell(lake, cfg, dataset_id, pool_id, model_id, chosen, *group[0], log=log)]
    effective = retrain_.with_band(cfg, chosen["band"])
    methods = {m.name: m for m in effective.methods}
    data = retrain_.training_data(lake, dataset_id, pool_id)
    return retrain_.train_cells(
        lake, effective, experiment_id=experiment_id(cfg), data=data,
        cells=[(methods[name], chosen["selections"][name], rep) for name, rep in group],
        baseline_model_id=model_id, purpose="method", log=log,
        eval_last=retrain_.curves_on(data))


def record(lake: Lake, cfg: ExperimentConfig, dataset_id: str, model_id: str, pool_id: str,
           scoring_run_id: str, chosen: dict, *, log: Log = print) -> str:
    """Record the experiment (its ids, selections and band search); returns its id."""
    exp_id = experiment_id(cfg)
    lake.write("experiments", exp_id, {
        "experiment_id": [exp_id], "preset": [cfg.preset],
        "config": [json.dumps(cfg.to_dict(), default=str)], "dataset_id": [dataset_id],
        "baseline_model_id": [model_id], "pool_id": [pool_id],
        "scoring_run_id": [scoring_run_id], "selections": [json.dumps(chosen["selections"])],
        "band_search": [json.dumps(chosen["search"])]})
    return exp_id


def report(lake: Lake, cfg: ExperimentConfig, exp_id: str, command: str, *,
           log: Log = print) -> str:
    """Write the report; returns its location (a directory, or a URL on an object store)."""
    write_report(lake, exp_id, command=command)
    return lake.url("reports", exp_id)


# ------------------------------------------------------------------ the order


def experiment(cfg: ExperimentConfig, runner: Runner, *, command: str,
               n_shards: int = 1) -> tuple[str, str]:
    """Run every step of the experiment in order; returns (experiment_id, report location).
    Every value the run needs is checked (``preflight``) before the first step writes."""
    preflight(cfg)
    dataset_id = runner.call(ingest, cfg)
    model_id = runner.call(baseline, cfg, dataset_id)
    pool_id = runner.call(pool, cfg, dataset_id)
    runner.call(score_originals, cfg, model_id, dataset_id)
    if n_shards > 1:  # the pool's scoring spread over the runner's workers
        runner.map(score_shard, [(cfg, model_id, pool_id, k, n_shards) for k in range(n_shards)])
        scoring_run_id = runner.call(commit_shards, cfg, model_id, pool_id, n_shards)
    else:
        scoring_run_id = runner.call(score, cfg, model_id, pool_id)
    chosen = runner.call(choose, cfg, dataset_id, pool_id, scoring_run_id, model_id)
    groups = runner.call(plan, cfg, model_id, chosen)
    runner.map(cells, [(cfg, dataset_id, pool_id, model_id, chosen, g) for g in groups])
    exp_id = runner.call(record, cfg, dataset_id, model_id, pool_id, scoring_run_id, chosen)
    return exp_id, runner.call(report, cfg, exp_id, command)


def run_experiment(cfg: ExperimentConfig, lake: Lake, *, log: Log = print,
                   command: str | None = None, workers: int | None = None) -> str:
    """Run every step here (each resumes from the lake) and write the report; returns the
    experiment id. The retraining grid's units (``plan``) train over ``workers`` processes of
    one thread each (default ``runners.default_workers``: one per core on the CPU, one on a
    GPU); every other step in this process."""
    command = command or f"smartaug experiment --preset {cfg.preset}"
    workers = default_workers(cfg.retrain.device) if workers is None else workers
    with ProcessRunner(lake, workers, log) as runner:
        if cfg.reps * len(cfg.methods) > 1:
            runner.start()  # the workers' imports overlap ingest and the baseline
        return experiment(cfg, runner, command=command, n_shards=score_shards())[0]
