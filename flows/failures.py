"""How the flows fail on what no retry can fix (bad input, a tampered lake, a full disk:
``pipeline.errors.is_permanent``): at once, with the message in the log and the run's state."""

from __future__ import annotations

from prefect import get_run_logger

from pipeline.errors import is_permanent, message

__all__ = ["fail_plainly", "retry_transient"]


def retry_transient(task, task_run, state) -> bool:
    """Retry only what a retry can fix: not bad input, a tampered lake or a full disk
    (``pipeline.errors.is_permanent``)."""
    return not (isinstance(state.data, BaseException) and is_permanent(state.data))


def fail_plainly(e: BaseException) -> None:
    """Log ``error: <message>`` and send it to the server at once, so that
    ``prefect deployment run ... --watch`` shows it before the run ends."""
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

