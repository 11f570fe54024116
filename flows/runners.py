"""The task runner of the flows, chosen by ``SMARTAUG_TASK_RUNNER`` (or an argument):

- ``threads`` (default): Prefect's thread pool with one worker, so the retraining grid runs one
  training at a time and each gets every core;
- ``dask`` or ``dask:N``: prefect-dask's ``DaskTaskRunner`` on a local cluster of N worker
  processes (default 2, one thread each): the retraining grid spreads over them;
- ``dask://HOST:PORT`` (or ``tcp://HOST:PORT``): a running Dask scheduler's workers. Every
  worker needs this project installed and the same lake path (or a shared file system).
"""

from __future__ import annotations

import os


def task_runner(spec: str | None = None):
    spec = spec or os.environ.get("SMARTAUG_TASK_RUNNER") or "threads"
    if spec == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    if spec == "dask" or spec.startswith("dask:") and not spec.startswith("dask://"):
        from prefect_dask import DaskTaskRunner

        n = int(spec.split(":", 1)[1]) if ":" in spec else 2
        return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    if spec.startswith(("dask://", "tcp://")):
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address="tcp://" + spec.split("://", 1)[1])
    raise ValueError(f"unknown task runner {spec!r}; valid: threads, dask, dask:N, "
                     f"dask://HOST:PORT")
