"""Connectors for tasks: a process-wide pool per endpoint, so chunk tasks on any worker thread reuse
open connections (an ADBC PostgreSQL connection takes about 70 ms to open: it loads the type catalog).

A connector is used by one task at a time: `using()` takes it out of the pool and puts it back
afterwards, or closes it after a fault so a retry reconnects.
"""
from __future__ import annotations

import contextlib
import threading

import connectors
from blocks.resolve import resolve_endpoint
from connectors.base import Connector, MigrationError

_lock = threading.Lock()
_idle: dict[str, list[Connector]] = {}  # endpoint reference -> open connectors nobody is using


def _take(ref: str) -> Connector:
    with _lock:
        pooled = _idle.get(ref)
        if pooled:
            return pooled.pop()
    return connectors.connect(resolve_endpoint(ref))


def _give_back(ref: str, conn: Connector) -> None:
    with _lock:
        _idle.setdefault(ref, []).append(conn)


def _close(conn: Connector) -> None:
    with contextlib.suppress(Exception):
        conn.close()


@contextlib.contextmanager
def using(*refs: str):
    """Yield connectors for `refs` (block name, env:VAR or password-free URL); after a transient
    fault or an unexpected error they are closed, so the retry starts afresh."""
    taken: list[tuple[str, Connector]] = []
    healthy = False
    try:
        for ref in refs:
            taken.append((ref, _take(ref)))
        yield [conn for _, conn in taken]
        healthy = True
    except MigrationError as exc:
        healthy = not exc.transient
        raise
    finally:
        for ref, conn in taken:
            if healthy:
                _give_back(ref, conn)
            else:
                _close(conn)


def close_all() -> None:
    """Close every pooled connector and any embedded ClickHouse engine (it locks its folder).
    Connectors in use by a running task are not in the pool and stay open."""
    with _lock:
        idle = [conn for pooled in _idle.values() for conn in pooled]
        _idle.clear()
    for conn in idle:
        _close(conn)
    connectors.release_embedded()
