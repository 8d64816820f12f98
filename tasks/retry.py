"""The one retry policy: transient faults (lost connection, deadlock, timeout) retry; the rest fail fast."""
from __future__ import annotations

from connectors.base import MigrationError

RETRIES = 3
RETRY_DELAYS = [1, 3, 9]
RETRY_JITTER = 0.5


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, MigrationError):
        return exc.transient
    return isinstance(exc, (ConnectionError, TimeoutError))


def retry_transient(task, task_run, state) -> bool:
    """Prefect retry_condition_fn."""
    try:
        state.result()
    except Exception as exc:  # the failed state re-raises its exception
        return is_transient(exc)
    return False


RETRY_POLICY = dict(retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_jitter_factor=RETRY_JITTER,
                    retry_condition_fn=retry_transient)
