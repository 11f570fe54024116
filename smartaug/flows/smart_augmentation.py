"""Prefect flow ``smart-augmentation``: the experiment's list of steps
(``smartaug.steps.experiment.experiment``, the same list ``smartaug experiment`` runs), each
step a task: cached on its inputs, its source and the lake's identity (``Lake.lake_id``: delete
``storage/`` and the next run recomputes), retried when a retry can help (never on bad input:
``smartaug.flows.failures``), and spread over the task runner
(``smartaug.flows.runners``) for the retraining grid and, with ``SMARTAUG_SCORE_SHARDS=N``, the pool's
scoring.

    prefect deployment run smart-augmentation/smart-augmentation -p preset=quick \
        -p overrides='{"epochs": 2}' --watch
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from smartaug.config import ExperimentConfig, apply_overrides
from smartaug.config import preset as get_preset
from smartaug.flows.failures import fail_plainly
from smartaug.flows.runners import PrefectRunner, task_runner
from smartaug.lake import Lake
from smartaug.steps import experiment as steps
from smartaug.steps.runners import default_workers


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
    model: str | None = Field(None, description="lenet5 | lenet5-wide | resnet | "
                              "torchvision:NAME | timm:NAME | package.module:factory",
                              pattern=r"^(lenet5|lenet5-wide|resnet|[A-Za-z_][\w.]*:[\w.-]+)$")
    device: Literal["auto", "cpu", "cuda"] | None = None
    materialize: Literal["auto", "always", "never"] | None = Field(
        None, description="How the pool is stored: always (pixels), never (recipes only; "
        "pixels regenerated when read), auto (pixels while they take at most 256 MiB)")
    stack: int | None = Field(None, ge=1, le=64, description="Trainings of one size trained "
                              "as one model at a time (1: each alone; default 8)")
    storage: str | None = Field(None, description="Lake root: a directory or an fsspec URL "
                                "such as s3://bucket/lake (default: SMARTAUG_STORAGE or "
                                "./storage)")


def deployment_command(deployment: str, preset: str, overrides: Overrides, config) -> str:
    """The `prefect deployment run` command that gives these parameters (for the report)."""
    o = overrides.model_dump(exclude_none=True)
    source = (f"-p config='{json.dumps(config.to_dict())}'" if config is not None
              else f"-p preset={preset}")
    return (f"prefect deployment run {deployment} {source}"
            + (f" -p overrides='{json.dumps(o)}'" if o else "") + " --watch")


def experiment_config(preset: str, overrides: Overrides,
                      config: ExperimentConfig | None = None) -> ExperimentConfig:
    """``config`` (a whole experiment, as a file describes it) or the preset, then the
    overrides on top."""
    return apply_overrides(config if config is not None else get_preset(preset),
                           **overrides.model_dump(exclude={"storage"}))


# Per step: retries (training steps are not retried: a failure there is not transient) and
# caching (record and report always run: a report shows the lake's state now).
_OPTIONS = {steps.baseline: {"retries": 0}, steps.choose: {"retries": 0},
            steps.cell: {"retries": 0}, steps.cells: {"retries": 0},
            steps.record: {"cache": False},
            steps.report: {"cache": False}}


def _publish(lake: Lake, exp_id: str) -> None:
    """The method table and a link to the HTML report as artifacts of the flow run."""
    report = json.loads(lake.fs.cat_file(str(lake.location("reports", exp_id, "report.json"))))
    rows = ["| method | loss | test acc % (mean ± std) | 95 % CI | n |", "|---|---|---|---|---|"]
    rows += [f"| {name} | {m['loss']} | {100 * m['test_acc_mean']:.2f} ± "
             f"{100 * m['test_acc_std']:.2f} | [{100 * m['ci95'][0]:.2f}, "
             f"{100 * m['ci95'][1]:.2f}] | {m['n']} |" for name, m in report["methods"].items()]
    create_markdown_artifact(
        key="smart-augmentation-methods",
        markdown=f"# Experiment {exp_id}\n\n" + "\n".join(rows) + f"\n\n{report['verdict']}\n",
        description="Test accuracy per method over seeds")
    html = lake.url("reports", exp_id, "report.html")
    create_link_artifact(key="smart-augmentation-report",
                         link=Path(html).as_uri() if lake.local else html,
                         link_text=f"report {exp_id}", description="The HTML report")


@flow(name="smart-augmentation", log_prints=True, task_runner=task_runner())
@fail_plainly
def smart_augmentation(preset: Literal["quick", "paper", "gpu"] = "quick",
                       overrides: Overrides = Overrides(),
                       config: ExperimentConfig | None = None) -> str:
    """AVH-guided augmentation selection: the whole experiment; returns the report directory.
    ``config``: a whole experiment (what an experiment file describes: `smartaug config check
    FILE --json`), used instead of the preset; ``overrides`` apply on top of either."""
    cfg = experiment_config(preset, overrides, config)  # a bad combination: before any work
    lake = Lake(overrides.storage)
    command = deployment_command("smart-augmentation/smart-augmentation", preset, overrides,
                                 config)
    # the trainings side by side in worker processes, as `smartaug experiment` runs them
    with PrefectRunner(lake.url(), _OPTIONS, apart=(steps.cell, steps.cells),
                       workers=default_workers(cfg.retrain.device)) as runner:
        if cfg.reps * len(cfg.methods) > 1:
            runner.start()  # the workers' imports overlap ingest and the baseline
        exp_id, location = steps.experiment(cfg, runner, command=command,
                                            n_shards=steps.score_shards())
    _publish(lake, exp_id)
    print(f"report: {location}")
    return location


if __name__ == "__main__":
    smart_augmentation()
