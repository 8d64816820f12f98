"""Our flow, `flows.migrate_tables.migrate_tables`, timed per pair; and Prefect's cost per chunk.

Each run happens in its own process (see bench.measure), a client of the Prefect API server that
bench.run_all started (or of Prefect's ephemeral one with --ephemeral-prefect). Before the timed
call the process migrates `bench_tiny` (2,000 rows) the same way: that connects to Prefect,
imports every connector and opens the connections, so none of that is in the timing.
The timed call is exactly
    migrate_tables(source=..., destination=..., tables=["bench_rows"], verify=False|True)
with every other parameter at its default (chunk_rows=250,000, parallel=2).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import psutil

from bench import config as C
from bench import sources
from bench.measure import (
    Context,
    Measurement,
    Sampler,
    check_landed,
    mb,
    self_maxrss_mb,
)

PAIRS = {  # name -> (pair label, source URL, destination kind)
    "pg_pg": ("PG->PG", C.PG_SRC_URL, "pg"),
    "pg_ch": ("PG->CH", C.PG_SRC_URL, "chdb"),
    "mysql_pg": ("MySQL->PG", C.MY_SRC_URL, "pg"),
}
OVERHEAD_CHUNKS = 200


def _chdb_probe(folder: Path):
    """A second chDB handle on the engine our connector opened; reads ClickHouse's own memory tracker."""
    import chdb
    handle = chdb.connect(str(folder))
    cur = handle.cursor()

    def probe() -> float:
        assert handle  # the cursor needs its connection alive
        cur.execute("SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'")
        return float(cur.fetchone()[0])

    def fingerprint(table: str) -> dict:
        cur.execute(f"SELECT count(), count(note), sum(id) FROM bench.`{table}`")
        n, notes, keys = cur.fetchone()
        return {"rows": int(n), "notes": int(notes), "key_sum": int(keys)}
    return probe, fingerprint


def _run_ours(pair: str, verify: bool):
    label, source, dest_kind = PAIRS[pair]

    def run(ctx: Context) -> dict:
        started = time.perf_counter()
        from flows.migrate_tables import migrate_tables
        import_s = time.perf_counter() - started
        folder = ctx.workdir / "chdb"
        destination = C.PG_DST_URL if dest_kind == "pg" else C.chdb_url(folder)
        expected = sources.source_fingerprint()

        started = time.perf_counter()  # warm-up: Prefect server, imports, connections
        warm = migrate_tables(source=source, destination=destination, tables=[C.TINY], verify=verify)
        warmup_s = time.perf_counter() - started
        if warm["rows"] != C.TINY_ROWS:
            raise RuntimeError(f"warm-up copied {warm['rows']} rows, expected {C.TINY_ROWS}")

        probe = fingerprint = None
        if dest_kind == "chdb":
            probe, fingerprint = _chdb_probe(folder)
        rss_before = psutil.Process().memory_info().rss
        with Sampler(probe=probe) as s:
            started = time.perf_counter()
            report = migrate_tables(source=source, destination=destination, tables=[C.TABLE], verify=verify)
            wall = time.perf_counter() - started
        landed = fingerprint(C.TABLE) if fingerprint else sources.pg_fingerprint(C.DST_DB, C.TABLE)
        check_landed(landed, expected, f"our flow {label}")
        table = report["tables"][0]
        result = {
            "rows": report["rows"], "wall_s": wall, "flow_seconds": report["seconds"],
            "verdict": report["verdict"], "checksum": table["checksum"],
            "peak_rss_mb": self_maxrss_mb(), "rss_basis": "self",
            "rss_before_mb": mb(rss_before), "sampled_peak_self_mb": mb(s.peak_self),
            "server_rss_mb": mb(s.peak_children),  # with --ephemeral-prefect: its API server (a subprocess)
            "import_s": round(import_s, 2), "warmup_s": round(warmup_s, 2),
        }
        if probe:
            # chDB runs inside this process, so peak_rss_mb includes it; its own tracker tells its share
            result["chdb_tracked_peak_mb"] = mb(s.peak_probe)
        return result
    return run


def _run_overhead(ctx: Context) -> dict:
    """Prefect's cost per chunk, measured two ways (both reported):

    1. a trivial @task submitted and awaited 200 times in a flow (as our flow does per chunk),
       minus the same flow with no tasks, per task;
    2. our flow PG->PG on bench_tiny split into 200 chunks of 10 rows vs. 1 chunk of 2,000
       (parallel=1): marginal time per extra chunk inside the flow (its report's seconds), minus
       the data work per chunk measured by calling the task functions directly (copy_chunk.fn /
       verify_chunk.fn, no Prefect).
    """
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.migrate_tables import _json_canonical, migrate_tables
    from tasks.connections import close_all, using
    from tasks.copy import copy_chunk
    from tasks.prepare import create_staging, plan_table
    from tasks.verify import verify_chunk

    n = OVERHEAD_CHUNKS

    @task(name="noop", cache_policy=NO_CACHE)
    def noop(i: int) -> int:
        return i

    @flow(name="bench-noop-tasks", task_runner=ThreadPoolTaskRunner(max_workers=8))
    def noop_tasks(count: int) -> float:
        started = time.perf_counter()
        for i in range(count):
            noop.submit(i).result()
        return time.perf_counter() - started

    # Times are taken inside the flows: a run's wall time also holds Prefect's start and end of the
    # run, whose variation would swamp a per-chunk difference.
    noop_tasks(3)  # warm-up: connects to Prefect (or starts its ephemeral server)
    empty_s = statistics.median(noop_tasks(0) for _ in range(3))
    tasks_s = noop_tasks(n)
    per_task_ms = 1000 * (tasks_s - empty_s) / n

    src, dst = C.PG_SRC_URL, C.PG_DST_URL
    kw = dict(source=src, destination=dst, tables=[C.TINY], parallel=1)
    migrate_tables(**kw, verify=True, chunk_rows=C.TINY_ROWS)  # warm-up
    out = {"noop_flow_s": round(empty_s, 3), "noop_tasks_s": round(tasks_s, 3), "noop_task_ms": round(per_task_ms, 2)}
    for verify in (False, True):
        one_s = migrate_tables(**kw, verify=verify, chunk_rows=C.TINY_ROWS)["seconds"]
        many_s = migrate_tables(**kw, verify=verify, chunk_rows=C.TINY_ROWS // n)["seconds"]
        # the same chunks' data work without Prefect: plan, stage, then call the task bodies
        plan = plan_table.fn(src, dst, C.TINY, "bench_tiny_direct", "00000000-direct", "full", None, [],
                             C.TINY_ROWS // n)
        if len(plan.chunks) != n:
            raise RuntimeError(f"expected {n} chunks, planned {len(plan.chunks)}")
        plan.raw_stream = create_staging.fn(src, dst, plan)
        canonical = _json_canonical(src, dst)
        started = time.perf_counter()
        for chunk in plan.chunks:
            copied = copy_chunk.fn(src, dst, plan, chunk)
            if verify:
                verify_chunk.fn(src, dst, plan, copied, canonical)
        direct_s = time.perf_counter() - started
        with using(dst) as (d,):
            d.drop_table(plan.staging)
        close_all()
        marginal_ms = 1000 * (many_s - one_s) / (n - 1)
        data_ms = 1000 * direct_s / n
        key = "copy_verify" if verify else "copy"
        out.update({
            f"{key}_1chunk_s": round(one_s, 3), f"{key}_{n}chunks_s": round(many_s, 3),
            f"{key}_direct_{n}chunks_s": round(direct_s, 3),
            f"{key}_marginal_ms_per_chunk": round(marginal_ms, 2), f"{key}_data_ms_per_chunk": round(data_ms, 2),
            f"{key}_prefect_ms_per_chunk": round(marginal_ms - data_ms, 2),
        })
    out.update({"rows": n, "wall_s": tasks_s, "peak_rss_mb": self_maxrss_mb(), "rss_basis": "self",
                "chunks": n})
    return out


def measurements() -> list[Measurement]:
    out = []
    for pair, (label, source, dest_kind) in PAIRS.items():
        for verify in (False, True):
            what = "copy+verify" if verify else "copy"
            out.append(Measurement(
                name=f"ours_{pair}_{'verify' if verify else 'copy'}", pair=label, kind="ours",
                title=f"ours {what}", run=_run_ours(pair, verify), needs_mariadb=source == C.MY_SRC_URL,
                available=_chdb_available if dest_kind == "chdb" else (lambda: None),
                extra={"verify": verify}))
    out.append(Measurement(
        name="prefect_overhead", pair="-", kind="overhead", title="Prefect overhead per chunk task",
        run=_run_overhead))
    return out


def _chdb_available() -> str | None:
    import importlib.util
    return None if importlib.util.find_spec("chdb") else "the chdb module is not installed (chdb-core)"
