"""Prefect flow ``study``: the study's list of steps (``smartaug.steps.study.study``, the same
list ``smartaug study`` runs), each step a task cached on its inputs, its source and the lake's
identity, and the grid's cells spread over single-threaded worker processes, one per core
(``smartaug.flows.runners``; with ``SMARTAUG_TASK_RUNNER=dask:N``, over a Dask cluster's).

    prefect deployment run study/study -p preset=quick -p overrides='{"epochs": 2}' --watch
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from smartaug.config import StudyConfig, apply_study_overrides, study_preset
from smartaug.flows.failures import fail_plainly
from smartaug.flows.runners import PrefectRunner, task_runner
from smartaug.flows.smart_augmentation import Overrides, deployment_command
from smartaug.lake import Lake
from smartaug.steps import study as steps

# training steps are not retried (a failure there is not transient); the study's state and
# its report always run: they show the lake as it is now
_OPTIONS = {steps.baseline: {"retries": 0}, steps.cell: {"retries": 0},
            steps.cells: {"retries": 0},
            steps.finished: {"cache": False}, steps.record: {"cache": False},
            steps.report: {"cache": False}}


def study_config(preset: str, overrides: Overrides, config: StudyConfig | None = None
                 ) -> StudyConfig:
    """``config`` (a whole study, as a study file describes it) or the study at the preset's
    size, then the overrides on top (``reps`` = the number of paired seeds)."""
    base = config if config is not None else study_preset(preset)
    return apply_study_overrides(base, **overrides.model_dump(exclude={"storage"}))


def _publish(lake: Lake, sid: str) -> None:
    """The verdict and the best rows as a markdown artifact, a link to the HTML report."""
    r = json.loads(lake.fs.cat_file(str(lake.location("reports", sid, "study.json"))))
    rows = ["| pool | budget | selector | loss | test acc % | Δ vs random (pp) | p (Holm) |",
            "|---|---|---|---|---|---|---|"]
    rows += [f"| {x['pool']} | {x['budget']:g} | {x['selector']} | {x['loss']} | "
             f"{100 * x['test_acc_mean']:.2f} ± {100 * x['test_acc_std']:.2f} | "
             + ("" if x["diff_vs_random"] is None else f"{100 * x['diff_vs_random']:+.2f}")
             + " | " + ("" if x["p_holm"] is None else f"{x['p_holm']:.3g}") + " |"
             for x in r["leaderboard"] if x["chosen_on"] or x["selector"] in
             ("random", "none", "all") or x["kind"] == "coverage"]
    create_markdown_artifact(key="study-leaderboard",
                             markdown=f"# Study {sid}\n\n{r['verdict']}\n\n" + "\n".join(rows),
                             description="Random, the positions chosen on validation, "
                                         "coverage and the references")
    page = lake.url("reports", sid, "study.html")
    create_link_artifact(key="study-report", link=Path(page).as_uri() if lake.local else page,
                         link_text=f"study {sid}", description="The HTML report")


@flow(name="study", log_prints=True, task_runner=task_runner())
@fail_plainly
def study(preset: Literal["quick", "paper", "gpu"] = "quick", overrides: Overrides = Overrides(),
          config: StudyConfig | None = None) -> str:
    """Which augmentations to keep, at equal budget: pools x budgets x selectors x losses x
    paired seeds, each cell a training; returns the report directory. ``config``: a whole
    study (what a study file describes), used instead of the preset; ``overrides`` apply on
    top of either."""
    cfg = study_config(preset, overrides, config)  # a bad grid: refused before any work
    lake = Lake(overrides.storage)
    command = deployment_command("study/study", preset, overrides, config)
    # the cells side by side in worker processes, as `smartaug study` runs them
    with PrefectRunner(lake.url(), _OPTIONS, apart=(steps.cell, steps.cells),
                       workers=steps.default_workers(cfg)) as runner:
        runner.start()
        sid, location = steps.study(cfg, runner, command=command, log=print)
    _publish(lake, sid)
    print(f"report: {location}")
    return location


if __name__ == "__main__":
    study()
