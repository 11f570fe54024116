"""Serve the deployments against the Prefect server in PREFECT_API_URL:

- ``smart-augmentation/smart-augmentation``: the whole experiment (default preset quick);

    python -m flows.serve

Stays up; runs start when triggered (``prefect deployment run ...``) or scheduled. Schedules are
not paused when this process stops (``pause_on_shutdown=False``).
"""

from __future__ import annotations

from prefect import serve

from flows.smart_augmentation import smart_augmentation


def deployments():
    return [smart_augmentation.to_deployment(
        name="smart-augmentation", parameters={"preset": "quick"},
        description="AVH-guided augmentation selection: ingest, baseline, augment, score, "
                    "select, retrain over seeds, report.")]


def main() -> None:
    serve(*deployments(), pause_on_shutdown=False)


if __name__ == "__main__":
    main()
