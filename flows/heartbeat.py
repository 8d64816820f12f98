"""Flow runs end without waiting for Prefect's heartbeat thread.

Prefect 3.9's flow-run heartbeat thread sleeps in one-second steps and a synchronous flow run
joins it on the way out, so every run ended up to a second after its work was done (0.5 s on
average: 10% of a million-row copy). The thread is a daemon and checks its stop signal after
each step, so not joining it changes nothing else: it still stops, and it sends no heartbeat
after the run ended. Prefect's asynchronous engine already leaves it unjoined. Drop this module
when Prefect's loop waits on its stop signal instead of sleeping.
"""
from __future__ import annotations

import inspect

from prefect import flow_engine

_prefect_send_heartbeats = getattr(flow_engine, "_send_heartbeats", None)


def _send_heartbeats_unjoined(engine, join_on_exit: bool = True):
    return _prefect_send_heartbeats(engine, join_on_exit=False)


def install() -> None:
    """Patch the engine, only where it has the function this was written against."""
    if _prefect_send_heartbeats is None or "join_on_exit" not in inspect.signature(_prefect_send_heartbeats).parameters:
        return
    flow_engine._send_heartbeats = _send_heartbeats_unjoined
