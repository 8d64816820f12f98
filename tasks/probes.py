"""Performance probes around each phase of a schema migration, and database health.

A probe is a read query the database's users depend on. Each is run `iterations` times; the
measurement gives the average and p99 latency over all runs, the number of failed runs, and the
replication lag the engine reports (`connectors/<engine>.py` `health()`). Probes are configured
per database (phase); without any, the engine's `default_probes()` plus a small read of every
table the migration touches are used.

`health(endpoint_ref)` is what the databases API reports: active connections and replication lag.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors.base import MigrationError
from tasks.connections import using

DEFAULT_ITERATIONS = 15


@dataclass(frozen=True)
class Thresholds:
    """When a phase counts as a regression. Average latency must grow by more than
    `latency_increase_pct` percent AND by more than `min_latency_increase_ms` (sub-millisecond
    latencies jump by large ratios on a busy machine). p99 is compared only when
    `p99_increase_pct` is set: a p99 of a few dozen samples is one sample, and noisy."""

    latency_increase_pct: float = 60.0
    min_latency_increase_ms: float = 5.0
    p99_increase_pct: float | None = None
    max_replication_lag_seconds: float = 60.0
    max_probe_errors: int = 0


@dataclass
class Measurement:
    avg_ms: float
    p99_ms: float
    errors: int
    samples: int
    replication_lag_seconds: float | None
    probe_errors: list[str]

    def contract(self) -> dict:
        """The contract's performanceMetrics."""
        return {"avgQueryLatencyMs": round(self.avg_ms, 3), "p99QueryLatencyMs": round(self.p99_ms, 3),
                "replicationLagSeconds": self.replication_lag_seconds}


def probes_for(conn, tables: list[str], configured: list[str] | None) -> list[str]:
    if configured:
        return list(configured)
    reads = [f"SELECT * FROM {conn.q(t)} LIMIT 10" for t in tables if conn.table_exists(t)]
    return conn.default_probes() + reads


def measure_with(conn, probes: list[str], iterations: int = DEFAULT_ITERATIONS) -> Measurement:
    times, failures = [], []
    for sql in probes:
        for _ in range(iterations):
            started = time.perf_counter()
            try:
                conn.query(sql)
            except MigrationError as exc:
                failures.append(str(exc)[:300])
                continue
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)] if times else 0.0
    lag = conn.health()["replication_lag_seconds"]
    return Measurement(avg_ms=sum(times) / len(times) if times else 0.0, p99_ms=p99, errors=len(failures),
                       samples=len(times), replication_lag_seconds=lag, probe_errors=failures[:5])


def breaches(before: Measurement, after: Measurement, limits: Thresholds) -> list[str]:
    """Why `after` is a regression from `before` (empty when it is not)."""
    why = []
    checks = [("average", before.avg_ms, after.avg_ms, limits.latency_increase_pct)]
    if limits.p99_increase_pct is not None:
        checks.append(("p99", before.p99_ms, after.p99_ms, limits.p99_increase_pct))
    for name, b, a, pct in checks:
        grew = (a - b) / b * 100 if b > 0 else 0.0
        if grew > pct and a - b > limits.min_latency_increase_ms:
            why.append(f"{name} query latency increased by {grew:.0f}% ({b:.2f} ms -> {a:.2f} ms; threshold {pct:g}%)")
    if after.errors > limits.max_probe_errors:
        why.append(f"{after.errors} probe queries failed (allowed {limits.max_probe_errors}): "
                   f"{after.probe_errors[0] if after.probe_errors else ''}")
    lag = after.replication_lag_seconds
    if lag is not None and lag > limits.max_replication_lag_seconds:
        why.append(f"replication lag {lag:.1f} s exceeds {limits.max_replication_lag_seconds:g} s")
    return why


@task(name="measure", task_run_name="measure {when} [{phase}]", cache_policy=NO_CACHE)
def measure(endpoint_ref: str, phase: str, when: str, tables: list[str], probes: list[str] | None = None,
            iterations: int = DEFAULT_ITERATIONS) -> dict:
    """Run the probes on one phase's target; returns a Measurement as a dict."""
    with using(endpoint_ref) as (conn,):
        return asdict(measure_with(conn, probes_for(conn, tables, probes), iterations))


def health(endpoint_ref: str) -> dict:
    """{"isHealthy", "activeConnections", "replicationLag"} for the databases API. Unreachable
    databases are unhealthy; replicas whose replication stopped are unhealthy."""
    try:
        with using(endpoint_ref) as (conn,):
            h = conn.health()
    except MigrationError as exc:
        return {"isHealthy": False, "activeConnections": 0, "replicationLag": None, "error": str(exc)}
    return {"isHealthy": h["replicating"] is not False, "activeConnections": h["active_connections"],
            "replicationLag": h["replication_lag_seconds"]}
