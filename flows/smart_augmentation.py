"""Prefect flow ``smart-augmentation``: one task per stage of the experiment.

    ingest -> baseline -> augment -> score -> select -> train (methods x reps) -> record -> report

The retraining grid is one task per (method, seed), and with ``SMARTAUG_SCORE_SHARDS=N`` the
pool's scoring is N shard tasks and a commit, submitted to the flow's task runner
(``flows.runners``: a one-worker thread pool by default, or Dask workers).

Tasks pass ids and paths, never tensors. Each task reads its inputs from the lake, calls one
library function (``pipeline.experiment``) and returns an id; results are persisted and cached
on the task's inputs and source, and the lake's content-hashed ids make every stage find its
output, so a crashed run resumes at its first unfinished stage and a finished one re-runs with
no work. Every task also takes the lake's identity (``Lake.lake_id``, a token created with the
storage root), so a cache entry never outlives the lake it describes: delete ``storage/`` and
the next run recomputes.

    prefect deployment run smart-augmentation/smart-augmentation -p preset=quick \
        -p overrides='{"epochs": 2}' --watch
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE
from pydantic import BaseModel, ConfigDict, Field

from flows.runners import task_runner
from pipeline.config import ExperimentConfig, apply_overrides
from pipeline.config import preset as get_preset
from pipeline.lake import Lake

CACHE = INPUTS + TASK_SOURCE


class Overrides(BaseModel):
    """Overrides of the preset, by the CLI's names (unset = the preset's value)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(None, description="fashion-mnist | mnist | cifar10 | "
                                "imagefolder:PATH")
    data: str | None = Field(None, description="Directory with the dataset's files")
    grayscale: bool | None = None
    image_size: int | None = Field(None, ge=8, le=1024, description="Resize to N x N")
    per_class_train: int | None = Field(None, ge=1)
    per_class_test: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1, le=1000)
    reps: int | None = Field(None, ge=1, le=100)
    model: Literal["lenet5", "lenet5-wide", "resnet"] | None = None
    device: Literal["auto", "cpu", "cuda"] | None = None
    storage: str | None = Field(None, description="Lake root: a directory or an fsspec URL "
                                "such as s3://bucket/lake (default: SMARTAUG_STORAGE or "
                                "./storage)")


def experiment_config(preset: str, overrides: Overrides) -> ExperimentConfig:
    o = overrides.model_dump(exclude={"storage"})
    return apply_overrides(get_preset(preset), **o)


def score_shards() -> int:
    """Shards of the pool's scoring (``SMARTAUG_SCORE_SHARDS``, default 1 = one task)."""
    n = int(os.environ.get("SMARTAUG_SCORE_SHARDS", "1"))
    if n < 1:
        raise ValueError(f"SMARTAUG_SCORE_SHARDS must be >= 1, got {n}")
    return n


def _lake(overrides: Overrides) -> Lake:
    return Lake(overrides.storage)


@task(name="ingest", cache_policy=CACHE, persist_result=True, retries=2, retry_delay_seconds=2)
def ingest_task(preset: str, overrides: Overrides, lake_id: str) -> str:
    """Load the dataset into the samples table."""
    from pipeline.experiment import stage_ingest

    return stage_ingest(_lake(overrides), experiment_config(preset, overrides))


@task(name="baseline", cache_policy=CACHE, persist_result=True)
def baseline_task(preset: str, overrides: Overrides, lake_id: str, dataset_id: str) -> str:
    """Train and register the baseline model."""
    from pipeline.experiment import stage_baseline

    return stage_baseline(_lake(overrides), experiment_config(preset, overrides), dataset_id)


@task(name="augment", cache_policy=CACHE, persist_result=True, retries=2, retry_delay_seconds=2)
def augment_task(preset: str, overrides: Overrides, lake_id: str, dataset_id: str) -> str:
    """Generate the augmentation pool."""
    from pipeline.experiment import stage_augment

    return stage_augment(_lake(overrides), experiment_config(preset, overrides), dataset_id)


@task(name="score", cache_policy=CACHE, persist_result=True, retries=2, retry_delay_seconds=2)
def score_task(preset: str, overrides: Overrides, lake_id: str, model_id: str, pool_id: str,
               dataset_id: str) -> str:
    """Score the pool (and the original train and test images) by AVH."""
    from pipeline.experiment import stage_score

    return stage_score(_lake(overrides), experiment_config(preset, overrides), model_id, pool_id,
                       dataset_id)


@task(name="score-originals", cache_policy=CACHE, persist_result=True, retries=2,
      retry_delay_seconds=2)
def score_originals_task(preset: str, overrides: Overrides, lake_id: str, model_id: str,
                         dataset_id: str) -> list[str]:
    """Score the original train and test images (for the report)."""
    from pipeline.score import score_split

    cfg = experiment_config(preset, overrides)
    return [score_split(_lake(overrides), model_id, dataset_id, split, device=cfg.retrain.device)
            for split in ("train", "test")]


@task(name="score-shard", cache_policy=CACHE, persist_result=True, retries=2,
      retry_delay_seconds=2)
def score_shard_task(preset: str, overrides: Overrides, lake_id: str, model_id: str,
                     pool_id: str, shard: int, n_shards: int) -> str:
    """Score one shard of the pool into the staging area."""
    from pipeline.score import score_pool_shard

    cfg = experiment_config(preset, overrides)
    return score_pool_shard(_lake(overrides), model_id, pool_id, shard, n_shards,
                            device=cfg.retrain.device)


@task(name="score-commit", cache_policy=CACHE, persist_result=True, retries=2,
      retry_delay_seconds=2)
def score_commit_task(preset: str, overrides: Overrides, lake_id: str, model_id: str,
                      pool_id: str, n_shards: int, shard_runs: list[str]) -> str:
    """Publish the scored shards as one scoring run."""
    from pipeline.score import commit_pool_shards

    cfg = experiment_config(preset, overrides)
    return commit_pool_shards(_lake(overrides), model_id, pool_id, n_shards,
                              device=cfg.retrain.device)


@task(name="select", cache_policy=CACHE, persist_result=True)
def select_task(preset: str, overrides: Overrides, lake_id: str, dataset_id: str, pool_id: str,
                scoring_run_id: str, model_id: str) -> dict:
    """The band search on validation (if configured), then one selection per method."""
    from pipeline.experiment import experiment_id, stage_choose

    lake, cfg = _lake(overrides), experiment_config(preset, overrides)
    eff, selections, search = stage_choose(lake, cfg, experiment_id(cfg), dataset_id, pool_id,
                                           scoring_run_id, model_id)
    return {"selections": selections, "search": search,
            "band": search.get("chosen") if search else None}


@task(name="train", cache_policy=CACHE, persist_result=True)
def train_task(preset: str, overrides: Overrides, lake_id: str, dataset_id: str, pool_id: str,
               model_id: str, band: list | None, method: str, rep: int,
               selection_id: str | None) -> str:
    """One cell of the retraining grid: one method, one seed."""
    from pipeline.experiment import experiment_id, stage_run, with_band

    cfg = experiment_config(preset, overrides)
    exp_id = experiment_id(cfg)
    return stage_run(_lake(overrides), with_band(cfg, band), exp_id, dataset_id, pool_id,
                     model_id, method, rep, selection_id)


@task(name="record", retries=2, retry_delay_seconds=2)
def record_task(preset: str, overrides: Overrides, dataset_id: str, pool_id: str,
                scoring_run_id: str, model_id: str, chosen: dict, run_ids: list[str]) -> str:
    """Record the experiment (its ids, selections and band search); returns its id."""
    from pipeline.experiment import experiment_id, record_experiment

    lake, cfg = _lake(overrides), experiment_config(preset, overrides)
    exp_id = experiment_id(cfg)
    record_experiment(lake, cfg, exp_id, dataset_id, model_id, pool_id, scoring_run_id,
                      chosen["selections"], chosen["search"])
    return exp_id


@task(name="report", retries=2, retry_delay_seconds=2)
def report_task(preset: str, overrides: Overrides, exp_id: str) -> str:
    """Write the report and publish it as artifacts; returns the report directory."""
    from pipeline.report import write_report

    o = overrides.model_dump(exclude_none=True)
    command = (f"prefect deployment run smart-augmentation/smart-augmentation -p preset={preset}"
               + (f" -p overrides='{json.dumps(o)}'" if o else "") + " --watch")
    lake = _lake(overrides)
    out = write_report(lake, exp_id, command=command)
    report = json.loads((out / "report.json").read_text())
    rows = ["| method | loss | test acc % (mean ± std) | 95 % CI | n |", "|---|---|---|---|---|"]
    for name, m in report["methods"].items():
        rows.append(f"| {name} | {m['loss']} | {100 * m['test_acc_mean']:.2f} ± "
                    f"{100 * m['test_acc_std']:.2f} | [{100 * m['ci95'][0]:.2f}, "
                    f"{100 * m['ci95'][1]:.2f}] | {m['n']} |")
    create_markdown_artifact(
        key="smart-augmentation-methods",
        markdown=f"# Experiment {exp_id}\n\n" + "\n".join(rows) + f"\n\n{report['verdict']}\n",
        description="Test accuracy per method over seeds")
    html = lake.url("reports", exp_id, "report.html")
    create_link_artifact(key="smart-augmentation-report",
                         link=Path(html).as_uri() if lake.local else html,
                         link_text=f"report {exp_id}", description="The HTML report")
    print(f"report: {lake.url('reports', exp_id)}")
    return lake.url("reports", exp_id)


@flow(name="smart-augmentation", log_prints=True, task_runner=task_runner())
def smart_augmentation(preset: Literal["quick", "paper"] = "quick",
                       overrides: Overrides = Overrides()) -> str:
    """AVH-guided augmentation selection: the whole experiment; returns the report directory."""
    experiment_config(preset, overrides)  # refuse a bad combination before any work
    lake_id = _lake(overrides).lake_id
    dataset_id = ingest_task(preset, overrides, lake_id)
    model_id = baseline_task(preset, overrides, lake_id, dataset_id)
    pool_id = augment_task(preset, overrides, lake_id, dataset_id)
    n_shards = score_shards()
    if n_shards > 1:  # the pool's scoring spread over the task runner's workers
        score_originals_task(preset, overrides, lake_id, model_id, dataset_id)
        shards = [score_shard_task.submit(preset, overrides, lake_id, model_id, pool_id, k,
                                          n_shards) for k in range(n_shards)]
        scoring_run_id = score_commit_task(preset, overrides, lake_id, model_id, pool_id,
                                           n_shards, [f.result() for f in shards])
    else:
        scoring_run_id = score_task(preset, overrides, lake_id, model_id, pool_id, dataset_id)
    chosen = select_task(preset, overrides, lake_id, dataset_id, pool_id, scoring_run_id,
                         model_id)
    cfg = experiment_config(preset, overrides)
    grid = [train_task.submit(preset, overrides, lake_id, dataset_id, pool_id, model_id,
                              chosen["band"], m.name, rep, chosen["selections"][m.name])
            for rep in range(cfg.reps) for m in cfg.methods]
    run_ids = [f.result() for f in grid]
    exp_id = record_task(preset, overrides, dataset_id, pool_id, scoring_run_id, model_id,
                         chosen, run_ids)
    return report_task(preset, overrides, exp_id)


if __name__ == "__main__":
    smart_augmentation()
