"""Connectors opened by tasks, reused per thread, forgotten after a fault so a retry reconnects."""
from __future__ import annotations

import contextlib
import threading

import connectors
from blocks.resolve import resolve_endpoint
from connectors.base import Connector, MigrationError

_local = threading.local()


def _cache() -> dict[str, Connector]:
    if not hasattr(_local, "open"):
        _local.open = {}
    return _local.open


def open_connector(ref: str) -> Connector:
    """A connector for the endpoint reference `ref` (block name, env:VAR or password-free URL)."""
    cache = _cache()
    if ref not in cache:
        cache[ref] = connectors.connect(resolve_endpoint(ref))
    return cache[ref]


def forget(ref: str) -> None:
    conn = _cache().pop(ref, None)
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


@contextlib.contextmanager
def using(*refs: str):
    """Yield connectors for `refs`; on a transient fault drop them so the retry starts afresh."""
    try:
        yield [open_connector(r) for r in refs]
    except MigrationError as exc:
        if exc.transient:
            for r in refs:
                forget(r)
        raise
    except Exception:
        for r in refs:
            forget(r)
        raise


def close_all() -> None:
    """Close this thread's connectors and any embedded ClickHouse engine (it locks its folder)."""
    for ref in list(_cache()):
        forget(ref)
    connectors.release_embedded()
