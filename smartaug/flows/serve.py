"""Serve the deployments against the Prefect server in PREFECT_API_URL:

- ``smart-augmentation/smart-augmentation``: the whole experiment (default preset quick);
- ``study/study``: which augmentations to keep at equal budget (default: the study at the quick
  preset's size);
- ``reselect/nightly``: a curriculum round of the newest experiment on a cron schedule
  (``SMARTAUG_RESELECT_CRON``, default ``0 3 * * *``, UTC).

    python -m smartaug.flows.serve

Stays up; runs start when triggered (``prefect deployment run ...``) or scheduled. Schedules are
not paused when this process stops (``pause_on_shutdown=False``).
"""

from __future__ import annotations

import os

from prefect import serve

from smartaug.flows.reselect import reselect
from smartaug.flows.smart_augmentation import smart_augmentation
from smartaug.flows.study import study


def deployments(cron: str | None = None):
    cron = cron or os.environ.get("SMARTAUG_RESELECT_CRON", "0 3 * * *")
    # the nightly round's fine-tuning on a curriculum (ORDER[:PACING[:START]]), when set
    schedule = os.environ.get("SMARTAUG_RESELECT_SCHEDULE") or None
    return [
        smart_augmentation.to_deployment(
            name="smart-augmentation", parameters={"preset": "quick"},
            description="AVH-guided augmentation selection: ingest, baseline, augment, score, "
                        "select, retrain over seeds, report."),
        study.to_deployment(
            name="study", parameters={"preset": "quick"},
            description="Which augmentations to keep, at equal budget: pools x budgets x "
                        "selectors (random, hardness windows, coverage) x paired seeds, with "
                        "a leaderboard against random (Holm-corrected)."),
        reselect.to_deployment(
            name="nightly", cron=cron, parameters={
                "retrain": True, **({"schedule": schedule} if schedule else {})},
            description="Curriculum round: newest model re-scores the pool, re-select the "
                        "band, record drift, fine-tune the next model."),
    ]


def main() -> None:
    serve(*deployments(), pause_on_shutdown=False)


if __name__ == "__main__":
    main()
