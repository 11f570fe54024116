"""How the flows run the pipeline's list of steps: ``PrefectRunner`` (each step a Prefect task,
``step_task``: cached on its inputs, its source and the lake's identity, retried when a retry
can help), on the task runner chosen by ``SMARTAUG_TASK_RUNNER`` (or an argument):

- ``threads`` (default): Prefect's thread pool. The steps run one after another, except the
  trainings that ``PrefectRunner`` is given as ``apart``: each such task waits in its thread on
  a worker process of one thread (a ``smartaug.steps.runners.ProcessRunner`` of one worker per
  core, ``SMARTAUG_WORKERS``), so the grid's trainings run side by side as they do under
  ``smartaug experiment``; with one worker (a GPU), one at a time;
- ``dask`` or ``dask:N``: prefect-dask's ``DaskTaskRunner`` on a local cluster of N worker
  processes (default 2, one thread each): the retraining grid spreads over them;
- ``dask://HOST:PORT`` (or ``tcp://HOST:PORT``): a running Dask scheduler's workers. Every
  worker needs this project installed and the same lake path (or a shared file system).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, NO_CACHE, CacheKeyFnPolicy
from prefect.utilities.hashing import hash_objects

from smartaug.flows.failures import fail_plainly, retry_transient
from smartaug.lake import Lake
from smartaug.steps.runners import ProcessRunner

__all__ = ["PrefectRunner", "step_task", "task_runner"]


def task_runner(spec: str | None = None):
    spec = spec or os.environ.get("SMARTAUG_TASK_RUNNER") or "threads"
    if spec == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        from smartaug.steps.runners import default_workers

        return ThreadPoolTaskRunner(max_workers=default_workers("cpu"))
    if spec == "dask" or spec.startswith("dask:") and not spec.startswith("dask://"):
        from prefect_dask import DaskTaskRunner

        n = int(spec.split(":", 1)[1]) if ":" in spec else 2
        return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    if spec.startswith(("dask://", "tcp://")):
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address="tcp://" + spec.split("://", 1)[1])
    from smartaug.errors import ConfigError

    raise ConfigError(f"unknown task runner {spec!r}; valid: threads, dask, dask:N, "
                     f"dask://HOST:PORT")


def step_task(step: Callable, options: dict | None = None, through: ProcessRunner | None = None):
    """A Prefect task running ``step(Lake(storage), *args)``, cached on its inputs, the
    step's source and the lake's identity (``options``: retries and cache, per step);
    ``through``: in one of its worker processes, the task's thread waiting on it."""
    options = {"retries": 2, "cache": True, **(options or {})}
    source = inspect.getsource(step)

    @fail_plainly  # a user error said plainly, before the run's state turns Failed
    def run(storage: str, args: tuple):
        # the step's log lines (one per epoch) as the task's log: in the UI and --watch
        if through is not None:
            return through.run(step, args, log=get_run_logger().info)
        return step(Lake(storage), *args, log=get_run_logger().info)

    run.__name__ = run.__qualname__ = step.__name__

    def key(context, parameters) -> str:
        return hash_objects(source, Lake(parameters["storage"]).lake_id)

    policy = INPUTS + CacheKeyFnPolicy(cache_key_fn=key) if options["cache"] else NO_CACHE
    return task(run, name=step.__name__.replace("_", "-"), description=step.__doc__,
                cache_policy=policy, persist_result=options["cache"],
                retries=options["retries"], retry_delay_seconds=2,
                retry_condition_fn=retry_transient)


class PrefectRunner:
    """Each step a task; ``map`` submits all its calls to the flow's task runner at once, and
    the step after it waits for them (``wait_for``). On the thread pool (``threads``) a
    ``map`` runs its calls one after another, except a step in ``apart`` (the trainings):
    those run side by side in ``workers`` single-threaded worker processes, started by
    ``start`` (their imports overlap the steps before) and stopped by ``close``; use it as a
    context manager."""

    def __init__(self, storage: str, options: dict[Callable, dict] | None = None,
                 apart: tuple[Callable, ...] = (), workers: int = 1):
        self.storage = storage
        self.options = options or {}
        self.apart = frozenset(apart)
        self.processes = ProcessRunner(Lake(storage), workers, log=None) if workers > 1 else None
        self.tasks: dict[tuple, object] = {}
        self.after: list = []

    def __enter__(self) -> PrefectRunner:
        return self

    def __exit__(self, kind, *exc) -> None:
        self.close(stop=kind is not None)

    def close(self, stop: bool = False) -> None:
        if self.processes is not None:
            self.processes.close(stop=stop)

    def start(self) -> None:
        if self.processes is not None and self.apart and _on_threads():
            self.processes.start()

    def _task(self, step: Callable, through: ProcessRunner | None = None):
        if (step, through) not in self.tasks:
            self.tasks[step, through] = step_task(step, self.options.get(step), through)
        return self.tasks[step, through]

    def call(self, step: Callable, *args):
        """One step, in the flow's process (a step may fork workers of its own)."""
        result = self._task(step)(self.storage, args, wait_for=self.after)
        self.after = []
        return result

    def map(self, step: Callable, calls: list[tuple]) -> list:
        threads = _on_threads()
        apart = (threads and step in self.apart and len(calls) > 1
                 and self.processes is not None and self.processes.apart)
        task = self._task(step, self.processes if apart else None)
        futures: list = []
        for args in calls:  # on the thread pool, one after another unless apart
            wait = self.after + (futures[-1:] if threads and not apart else [])
            futures.append(task.submit(self.storage, args, wait_for=wait))
        self.after = futures
        return [f.result() for f in futures]


def _on_threads() -> bool:
    """Whether the flow running now runs its tasks on Prefect's thread pool."""
    from prefect.context import FlowRunContext
    from prefect.task_runners import ThreadPoolTaskRunner

    context = FlowRunContext.get()
    return context is not None and isinstance(context.task_runner, ThreadPoolTaskRunner)
