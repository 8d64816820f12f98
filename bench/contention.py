"""How busy the machine was with other people's work while a run went on.

The machine has 2 cores and is shared (tests, other benchmarks), so every run records the CPU
time that processes unrelated to it used meanwhile. Related: the run's own process tree, and the
database servers' processes, except PostgreSQL backends connected to a database other than ours.
`other_cpu_share` is that foreign CPU time over (wall x cores): 0.25 means a quarter of the
machine was busy elsewhere. `run_cpu_s` is the CPU time of the related processes: the work a
run cost, which on a busy or unsteady machine varies less than its wall time.
"""
from __future__ import annotations

import os
import threading
import time

import psutil

from bench import config as C

SERVERS = ("postgres", "mariadbd", "mysqld")
OUR_DATABASES = (C.SRC_DB, C.DST_DB, "postgres")


class ContentionMonitor:
    def __init__(self, root_pid: int, interval: float = 1.0):
        self.root_pid, self.interval = root_pid, interval
        self.ours: set[int] = {root_pid, os.getpid()}
        self.cpu: dict[int, tuple[float, float]] = {}  # pid -> (cpu seconds at first sight, last seen)
        self.foreign: dict[int, str] = {}  # pid -> name, for the report
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="contention")
        self.started = self.wall = 0.0

    def _is_ours(self, proc: psutil.Process, name: str, cmdline: str) -> bool:
        if proc.pid in self.ours:
            return True
        if name in SERVERS or cmdline.startswith("postgres:"):
            # "postgres: 15/main: USER DATABASE HOST(PORT) STATE" for a backend; other server processes have no DB
            parts = cmdline.split()
            if cmdline.startswith("postgres:") and len(parts) >= 5 and "(" in parts[4]:
                return parts[3] in OUR_DATABASES
            return True
        return False

    def _tick(self, initial: bool = False) -> None:
        try:
            self.ours.update(p.pid for p in psutil.Process(self.root_pid).children(recursive=True))
        except psutil.Error:
            pass
        for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
            try:
                times = proc.info["cpu_times"]
                if times is None:
                    continue
                used = times.user + times.system
                # processes already running at the start count from then; those born later, in full
                first = self.cpu[proc.pid][0] if proc.pid in self.cpu else (used if initial else 0.0)
                self.cpu[proc.pid] = (first, used)
                cmdline = " ".join(proc.info["cmdline"] or [])
                if self._is_ours(proc, proc.info["name"] or "", cmdline):
                    self.foreign.pop(proc.pid, None)
                else:
                    self.foreign[proc.pid] = (cmdline or proc.info["name"] or "?")[:80]
            except psutil.Error:
                continue

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._tick()

    def __enter__(self) -> "ContentionMonitor":
        self.started = time.perf_counter()
        self._tick(initial=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._tick()
        self.wall = time.perf_counter() - self.started

    def summary(self) -> dict:
        used = {pid: last - first for pid, (first, last) in self.cpu.items() if pid in self.foreign}
        total = sum(used.values())
        top = sorted(((cpu, self.foreign[pid]) for pid, cpu in used.items() if cpu > 0.5), reverse=True)[:3]
        cores = psutil.cpu_count() or 1
        related = sum(last - first for pid, (first, last) in self.cpu.items() if pid not in self.foreign)
        return {"other_cpu_s": round(total, 1),
                "run_cpu_s": round(related, 2),  # the run's processes and the database servers' work for it
                "other_cpu_share": round(total / (self.wall * cores), 3) if self.wall else 0.0,
                "other_top": [f"{cpu:.1f}s {what}" for cpu, what in top]}
