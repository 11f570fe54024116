"""How the flows fail on what no retry can fix (bad input, a tampered lake, a full disk:
``smartaug.errors.is_user_error``): at once, with the message in the log and the run's state.
Anything else is a bug or a transient failure: its traceback, and a retry where the task has
retries."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

from prefect import get_run_logger

from smartaug.errors import is_user_error, message

__all__ = ["fail_plainly", "retry_transient"]


def retry_transient(task, task_run, state) -> bool:
    """Retry only what a retry can fix: not a user error (``smartaug.errors.is_user_error``)."""
    return not (isinstance(state.data, BaseException) and is_user_error(state.data))


def fail_plainly(fn: Callable) -> Callable:
    """Decorate a flow or a task's function: a user error it raises is logged as
    ``error: <message>`` and sent to the server at once (so ``prefect deployment run ...
    --watch`` shows it before the run ends), once, then re-raised."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if is_user_error(e) and not getattr(e, "_smartaug_logged", False):
                _log(e)
            raise

    # the flow's parameters, their annotations resolved where ``fn`` was written (Prefect
    # builds the parameters' schema from the signature)
    run.__signature__ = inspect.signature(fn, eval_str=True)
    return run


def _log(e: BaseException) -> None:
    get_run_logger().error("error: %s", message(e))
    try:
        e._smartaug_logged = True  # once: the flow re-raises a task's error
    except AttributeError:
        pass
    try:
        from prefect.logging.handlers import APILogHandler

        APILogHandler.flush()
    except Exception:  # noqa: BLE001 - the log still goes out with the next batch
        pass
