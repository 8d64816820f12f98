"""Running one measurement: in its own process, timed, with its memory sampled.

The parent (bench.run_all) starts `python -m bench.measure NAME ...` once per run, so peak RSS
is per run and one run's caches or leaks never reach the next. The child runs the measurement,
writes a JSON result file and exits; a measurement that cannot run raises `Skip`.

Memory, as each kind of measurement reports it (`rss_basis` in the result):
  - "self": ru_maxrss of the measuring process, for work done in-process (our flow, chDB, dlt,
    pandas). For our flow the Prefect API server is a process of its own, reported
    apart (`server_rss_mb`).
  - "tools": the peak of the summed RSS of the external tools' processes (psql | psql, sling,
    pgloader, ...), sampled every 50 ms; `max_tool_rss_mb` is the largest single one (ru_maxrss).
Database servers' own memory (postgres backends, mariadbd) is never counted.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from bench import config as C


class Skip(Exception):
    """This measurement cannot run here; the message says why."""


@dataclass
class Context:
    rows: int  # rows in bench_rows
    workdir: Path  # a fresh folder for this run (chDB data, tool state)
    run: int


@dataclass
class Measurement:
    name: str
    pair: str  # "PG->PG", "PG->CH", "MySQL->PG", or "-"
    kind: str  # "ours", "anchor" or "overhead"
    title: str
    run: Callable[[Context], dict]  # runs in the child process
    available: Callable[[], str | None] = lambda: None  # in the parent: None, or why it cannot run
    needs_mariadb: bool = False
    note: str = ""
    extra: dict = field(default_factory=dict)


def mb(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)


def self_maxrss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def children_maxrss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


class Sampler:
    """Peak RSS of this process and of its descendants, sampled in a thread while a block runs.

    `probe`, if given, is called each tick too and its largest return value kept (e.g. chDB's
    own memory tracker)."""

    def __init__(self, interval: float = 0.05, probe: Callable[[], float] | None = None):
        self.interval, self.probe = interval, probe
        self.me = psutil.Process()
        self.peak_self = self.peak_children = self.peak_probe = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")

    def _tick(self) -> None:
        try:
            self.peak_self = max(self.peak_self, self.me.memory_info().rss)
            total = 0
            for p in self.me.children(recursive=True):
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_children = max(self.peak_children, total)
        except psutil.Error:
            pass
        if self.probe:
            try:
                self.peak_probe = max(self.peak_probe, float(self.probe()))
            except Exception:
                pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._tick()
            self._stop.wait(self.interval)

    def __enter__(self) -> "Sampler":
        self._tick()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._tick()


def run_tool(cmd: list[str] | str, env: dict | None = None, shell: bool = False, log=None) -> dict:
    """Run an external command (a pipeline when shell=True), timed; raise with its stderr on failure."""
    if shell:
        cmd = ["bash", "-o", "pipefail", "-c", cmd]
    with Sampler() as s:
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env or C.tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wall = time.perf_counter() - started
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    if log:
        log.write(out)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {out.strip()[-600:]}")
    return {"wall_s": wall, "peak_rss_mb": mb(s.peak_children), "rss_basis": "tools",
            "max_tool_rss_mb": children_maxrss_mb(), "output_tail": out.strip()[-300:]}


def check_landed(landed: dict, expected: dict, what: str) -> None:
    """A measurement counts only when the destination holds the rows it should."""
    if landed != expected:
        raise RuntimeError(f"{what}: destination holds {landed}, expected {expected}")


# --- the child process ---------------------------------------------------------------

def registry() -> dict[str, Measurement]:
    from bench import anchors, ours
    return {m.name: m for m in ours.measurements() + anchors.measurements()}


def child_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--run", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    m = registry()[args.name]
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = {"status": "ok", **m.run(Context(args.rows, args.workdir, args.run))}
    except Skip as exc:
        result = {"status": "skipped", "reason": str(exc)}
    except BaseException as exc:  # reported, never turned into a number
        traceback.print_exc()
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {str(exc).strip()[:600]}"}
    result.setdefault("self_maxrss_mb", self_maxrss_mb())
    args.out.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
