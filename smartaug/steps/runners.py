"""How a list of steps runs: every runner has ``call(step, *args)`` (one step) and
``map(step, calls)`` (a step over many argument tuples, e.g. the training grid's cells); a
step is ``step(lake, *args, log=...)``. ``LocalRunner``: in this process, one after another
(``smartaug experiment``); ``ProcessRunner``: ``map`` over worker processes of one thread
each (``smartaug study``). The Prefect flows' runner is ``smartaug.flows.runners.PrefectRunner``."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.managers import SyncManager
from queue import Empty
from typing import Protocol

from smartaug.errors import InputError, UserError
from smartaug.lake import Lake
from smartaug.orphans import watch_parent
from smartaug.progress import Bar

__all__ = ["LocalRunner", "ProcessRunner", "Runner", "WORKERS_ENV", "WorkerDied", "default_workers"]

Log = Callable[[str], None] | None


class Runner(Protocol):
    def call(self, step: Callable, *args): ...

    def map(self, step: Callable, calls: list[tuple]) -> list: ...


class LocalRunner:
    """Every step in this process, one after another."""

    def __init__(self, lake: Lake, log: Log = print):
        self.lake, self.log = lake, log

    def call(self, step: Callable, *args):
        return step(self.lake, *args, log=self.log)

    def map(self, step: Callable, calls: list[tuple]) -> list:
        return [self.call(step, *args) for args in calls]


WORKERS_ENV = "SMARTAUG_WORKERS"


def default_workers(device: str = "auto") -> int:
    """``SMARTAUG_WORKERS`` when set (e.g. 1 on a machine other jobs share); else one worker
    per core on the CPU, one on a GPU (the trainings share the device)."""
    value = os.environ.get(WORKERS_ENV)
    if value:
        if not value.isdigit() or int(value) < 1:
            raise InputError(f"{WORKERS_ENV} must be a positive integer, got {value!r}")
        return int(value)
    from smartaug.core.train import resolve_device

    if resolve_device(device).type != "cpu":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


class WorkerDied(UserError):
    """A worker process ended before its step did (killed, or out of memory)."""


def _worker_start(parent: int) -> None:
    """A worker: one torch thread, and it ends when its parent does (``smartaug.orphans``).
    Ctrl-C is the main process's to handle (one line, not a traceback from every worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_parent(parent)
    import torch

    torch.set_num_threads(1)


def _server_start(parent: int) -> None:
    """The log queues' server process: it ends with its parent, and leaves Ctrl-C to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_parent(parent)


def _warm() -> None:
    """What every training step imports first (torch's optimisers import torch._dynamo on
    first use, seconds): done while the main process works on the steps before the grid."""
    import torch

    import smartaug.steps.retrain  # noqa: F401 - the training steps and what they import

    torch.optim.Adam(torch.nn.Linear(1, 1).parameters())


def _call(root: str, step: Callable, args: tuple, queue=None):
    """A step in a worker; ``queue``: where its log lines go (the caller logs them)."""
    return step(Lake(root), *args, log=None if queue is None else queue.put)


class ProcessRunner(LocalRunner):
    """Steps in this process; ``map`` over ``workers`` processes of one thread each (small
    trainings use one core well and several threads badly). The workers start on the first
    ``map`` and serve every later one (each keeps the data it read) until ``close``; use it
    as a context manager. A worker ends within a fraction of a second of this process's death
    (even by SIGKILL) and never commits a partition after it."""

    def __init__(self, lake: Lake, workers: int, log: Log = print):
        super().__init__(lake, log)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._manager = None  # the log lines' queues of ``run``, made on its first call
        self._lock = threading.Lock()  # ``run`` from several threads: one pool, one manager

    def __enter__(self) -> ProcessRunner:
        return self

    def __exit__(self, kind, *exc) -> None:
        self.close(stop=kind is not None)

    def close(self, stop: bool = False) -> None:
        """Shut the workers down; ``stop``: at once, their running steps ended with them (a
        step commits only when it completes, so nothing partial is left)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            if stop:
                for p in list((pool._processes or {}).values()):
                    p.terminate()
            pool.shutdown(wait=not stop, cancel_futures=True)
        if self._manager is not None:
            manager, self._manager = self._manager, None
            manager.shutdown()

    def start(self) -> None:
        """Start the workers now, each importing what the training steps need, while this
        process runs the steps before the first ``map`` (the imports overlap them)."""
        if self.workers > 1 and not self.lake.url().startswith("memory://"):
            self._spawn()
            for _ in range(self.workers):
                self._pool.submit(_warm)

    def _spawn(self) -> None:
        if self._pool is None:  # spawn: a clean interpreter, no forked threads
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_start, initargs=(os.getpid(),))

    @property
    def apart(self) -> bool:
        """Whether ``map`` and ``run`` use worker processes (not for one worker, nor for a
        lake in this process's memory)."""
        return self.workers > 1 and not self.lake.url().startswith("memory://")

    def run(self, step: Callable, args: tuple, log: Log = None):
        """One step in a worker process, its log lines passed to ``log`` here as they come.
        Threads may call this at once (a Prefect flow's grid: one task a thread, each
        waiting on its worker)."""
        if not self.apart:
            return step(self.lake, *args, log=log)
        queue = None
        with self._lock:
            self._spawn()
            if log is not None:
                if self._manager is None:  # a server process, gone with this one
                    self._manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
                    self._manager.start(_server_start, (os.getpid(),))
                queue = self._manager.Queue()
        future = self._pool.submit(_call, self.lake.url(), step, args, queue)
        try:
            while queue is not None:
                try:
                    log(queue.get(timeout=0.2))
                except Empty:
                    if future.done():
                        while not queue.empty():
                            log(queue.get())
                        break
            return future.result()
        except BrokenProcessPool:
            self.close(stop=True)
            raise WorkerDied(f"a worker process ended while it ran {step.__name__} (killed, "
                             f"or out of memory: see the system log); what finished is in the "
                             f"lake, nothing partial is. Run it again to go on from there "
                             f"(with fewer workers, {WORKERS_ENV}, if memory ran out)") from None

    def map(self, step: Callable, calls: list[tuple]) -> list:
        if self.workers <= 1 or len(calls) <= 1 or self.lake.url().startswith("memory://"):
            return super().map(step, calls)
        self._spawn()
        futures = [self._pool.submit(_call, self.lake.url(), step, args) for args in calls]
        pending, n_done = set(futures), 0
        bar = Bar(f"{step.__name__} ({self.workers} workers)", len(calls), self.log)
        try:
            while pending:
                finished_, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished_:
                    if f.exception() is not None:
                        raise f.exception()
                n_done += len(finished_)
                bar.update(n_done)
        except BrokenProcessPool:
            self.close(stop=True)
            raise WorkerDied(
                f"a worker process ended while it ran {step.__name__} (killed, or out of "
                f"memory: see the system log); the {n_done} of {len(calls)} that finished are "
                f"in the lake, nothing partial is. Run the same command again to go on from "
                f"there (with fewer --workers if memory ran out)") from None
        except BaseException:  # a step's error, or Ctrl-C: the other workers stop now
            self.close(stop=True)
            raise
        return [f.result() for f in futures]
