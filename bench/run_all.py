"""`make bench`: build the data, run every measurement --repeat times (each in its own process), report.

    python -m bench.run_all [--rows N] [--repeat N] [--only a,b] [--skip-anchors] [--rebuild] [--ephemeral-prefect]

Our flow runs as it runs in production, in a process of its own that talks to a Prefect API server:
the benchmark starts one `prefect server start` for the whole invocation and reports its memory
apart. With --ephemeral-prefect each run starts Prefect's ephemeral server instead, which also
imports the server's code into the flow's own process (about 75 MB more there).

Prints the results table and writes bench/results/latest.json; each run's output goes to
bench/results/logs/NAME-RUN.log.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from bench import config as C
from bench import report, sources
from bench.contention import ContentionMonitor
from bench.measure import Measurement, registry

ORDER = [  # grouped by pair: ours first, then its anchors
    "ours_pg_pg_copy", "ours_pg_pg_verify", "psql_pipe", "sling_pg_pg", "dlt_pg_pg", "pandas_pg_pg",
    "ours_pg_ch_copy", "ours_pg_ch_verify", "chdb_postgresql",
    "ours_mysql_pg_copy", "ours_mysql_pg_verify", "pgloader", "mariadb_pipe", "sling_mysql_pg",
    "prefect_overhead",
]
RUN_TIMEOUT_S = 3600


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in bench_rows (default 1,000,000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported (default 3)")
    ap.add_argument("--only", default="", help=f"comma list of measurements: {', '.join(ORDER)}")
    ap.add_argument("--skip-anchors", action="store_true", help="run only our flow and the Prefect overhead")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the source tables even if they match")
    ap.add_argument("--ephemeral-prefect", action="store_true",
                    help="no standing Prefect server: each run starts Prefect's ephemeral one (see above)")
    ap.add_argument("--profile", action="store_true",
                    help="run each measurement under `py-spy record` (bench extra); flame graphs in bench/results/profiles/")
    args = ap.parse_args(argv)
    if args.rows < 2 * C.TINY_ROWS or args.repeat < 1:
        ap.error(f"--rows must be at least {2 * C.TINY_ROWS} and --repeat at least 1")
    return args


def select(args) -> list[Measurement]:
    known = registry()
    names = [n for n in ORDER if n in known]
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in known]
        if unknown:
            sys.exit(f"unknown measurement(s): {', '.join(unknown)}; known: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    if args.skip_anchors:
        names = [n for n in names if known[n].kind != "anchor"]
    return [known[n] for n in names]


def run_once(m: Measurement, rows: int, run: int, profile: bool = False, env: dict | None = None) -> dict:
    """One run of `m` in a fresh process, against a fresh destination database and work folder."""
    sources.reset_pg_destination()
    workdir = C.STATE / "runs" / f"{m.name}-{run}"
    shutil.rmtree(workdir, ignore_errors=True)
    out = C.RESULTS / "runs" / f"{m.name}-{run}.json"
    log = C.RESULTS / "logs" / f"{m.name}-{run}.log"
    for p in (out, log):
        p.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.measure", m.name, "--rows", str(rows), "--workdir", str(workdir),
           "--run", str(run), "--out", str(out)]
    if profile:  # includes the warm-up; py-spy's own overhead makes the timings of this run not comparable
        svg = C.RESULTS / "profiles" / f"{m.name}-{run}.svg"
        svg.parent.mkdir(parents=True, exist_ok=True)
        cmd = [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses",
               "--rate", "50", "-o", str(svg), "--"] + cmd
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, cwd=C.ROOT, env=C.tool_env(**(env or {})), stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: on a time-out we end it and its children
        with ContentionMonitor(proc.pid) as monitor:
            try:
                proc.wait(timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return {"status": "failed", "reason": f"timed out after {RUN_TIMEOUT_S} s (log: {log})"}
    shutil.rmtree(workdir, ignore_errors=True)
    if not out.exists():
        return {"status": "failed", "reason": f"the run exited {proc.returncode} without a result (log: {log})"}
    # over the whole child process (warm-up included), how busy the machine was with unrelated work
    return {**json.loads(out.read_text()), **monitor.summary()}


def describe_run(result: dict) -> str:
    if result["status"] != "ok":
        return f"{result['status']}: {(result.get('reason') or '').splitlines()[0][:300]}"
    if "noop_task_ms" in result:
        return (f"{result['noop_task_ms']:.1f} ms per trivial task, "
                f"{result['copy_prefect_ms_per_chunk']:.1f} ms Prefect per chunk of our flow")
    busy = f"; other work on the machine: {100 * result['other_cpu_share']:.0f}%" if result.get("other_cpu_share") else ""
    return (f"{result['wall_s']:.2f} s, {result['rows'] / result['wall_s']:,.0f} rows/s, "
            f"peak RSS {result['peak_rss_mb']:.0f} MB{busy}")


def versions() -> dict:
    out = {"python": platform.python_version(), "machine": f"{os.cpu_count()} cores, {platform.machine()}"}
    for pkg in ("prefect", "pyarrow", "adbc-driver-postgresql", "psycopg", "pymysql", "chdb-core",
                "clickhouse-connect", "dlt", "sling-linux-amd64", "pandas", "sqlalchemy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    for tool, flag in (("psql", "--version"), ("mariadb", "--version"), ("pgloader", "--version")):
        if shutil.which(tool):
            text = subprocess.run([tool, flag], capture_output=True, text=True).stdout.strip().splitlines()
            out[tool] = text[0] if text else "?"
    return out


CODE_DIRS = ("connectors", "tasks", "flows", "blocks")


def code_state() -> dict:
    """Which code is measured: the commit, and a digest of the code under test as it is on disk."""
    import hashlib
    digest = hashlib.sha256()
    for d in CODE_DIRS:
        for f in sorted((C.ROOT / d).rglob("*.py")):
            digest.update(str(f.relative_to(C.ROOT)).encode() + f.read_bytes())
    git = subprocess.run(["git", "-C", str(C.ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(C.ROOT), "status", "--porcelain", "--", *CODE_DIRS],
                           capture_output=True, text=True)
    return {"commit": git.stdout.strip() or "?", "uncommitted_changes": bool(dirty.stdout.strip()),
            "digest": digest.hexdigest()[:12]}


def main(argv=None) -> int:
    args = parse_args(argv if argv is not None else sys.argv[1:])
    for key, value in C.tool_env().items():  # the Makefile sets these; so does a direct run
        os.environ.setdefault(key, value)
    chosen = select(args)
    started = time.perf_counter()
    code_before = code_state()
    print(f"bench: {len(chosen)} measurement(s), {args.rows:,} rows, repeat {args.repeat}", flush=True)
    sources.build(args.rows, rebuild=args.rebuild, need_mariadb=any(m.needs_mariadb for m in chosen))
    shutil.rmtree(C.STATE / "runs", ignore_errors=True)

    server = None if args.ephemeral_prefect else _start_prefect_server()
    try:
        results = _run_all(chosen, args, {"PREFECT_API_URL": server.api_url} if server else {})
    finally:
        prefect = {"mode": "ephemeral (per run)" if server is None else "standing server",
                   "server_peak_rss_mb": server.peak_rss_mb() if server else None}
        if server:
            server.stop()

    meta = {"rows": args.rows, "repeat": args.repeat, "only": args.only, "skip_anchors": args.skip_anchors,
            "profiled": args.profile, "prefect": prefect, "code": code_before, "code_after": code_state(),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "total_s": round(time.perf_counter() - started, 1), "versions": versions()}
    print()
    print(report.render(results, meta))
    path = C.RESULTS / "latest.json"
    report.write_json(path, results, meta)
    print(f"\nwritten: {path.relative_to(C.ROOT)} (total {meta['total_s']:.0f} s)")
    return 0


def _start_prefect_server():
    from migration_assistant.local_prefect import LocalPrefectServer
    home = C.STATE / "prefect-server"
    shutil.rmtree(home, ignore_errors=True)
    server = LocalPrefectServer.start(home)
    print(f"Prefect server for our runs: {server.api_url}", flush=True)
    return server


def _run_all(chosen: list[Measurement], args, env: dict) -> dict[str, dict]:
    """Every measurement once per round, --repeat rounds: a slow spell of the machine then falls on
    all of them alike, and a copy and its copy+verify run side by side in each round."""
    runs: dict[str, list[dict]] = {}
    for m in chosen:
        reason = m.available()
        if reason:
            print(f"{m.name}: skipped: {reason}", flush=True)
            runs[m.name] = [{"status": "skipped", "reason": reason}]
        else:
            runs[m.name] = []
    for run in range(1, args.repeat + 1):
        for m in chosen:
            done = runs[m.name]
            if done and done[-1]["status"] != "ok":
                continue  # skipped, or failed: reported once, not retried
            result = run_once(m, args.rows, run, args.profile, env)
            print(f"{m.name} run {run}/{args.repeat}: {describe_run(result)}", flush=True)
            done.append(result)
    return {m.name: report.aggregate(m, runs[m.name]) for m in chosen}


if __name__ == "__main__":
    sys.exit(main())
