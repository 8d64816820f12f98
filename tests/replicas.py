"""A PostgreSQL logical-replication pair for schema-migration tests: two throwaway clusters.

The shared server on :5432 runs with wal_level=replica, and restarting it would disturb others,
so the publisher is a throwaway cluster too. Both are made with initdb in a temporary folder
(as the `postgres` OS user when the tests run as root, since initdb refuses root), on free
ports, with wal_level=logical, fsync off and small buffers. Database `app` on the publisher
publishes table users (FOR ALL TABLES would also publish each target's history table);
the subscriber's `app` subscribes to it. One pair per test session.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from migration_assistant.local_prefect import free_port

PG_BIN = Path(os.environ.get("MA_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass
class ReplicaPair:
    publisher: str  # URL of database `app` on the publisher (no password: trust auth)
    subscriber: str

    def wait_replicated(self, sql: str, expected, timeout: float = 20) -> None:
        """Wait until `sql` returns `expected` (first column of first row) on the subscriber."""
        deadline, got = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            with psycopg.connect(self.subscriber, autocommit=True) as c:
                row = c.execute(sql).fetchone()
            got = row[0] if row else None
            if got == expected:
                return
            time.sleep(0.2)
        raise AssertionError(f"subscriber: {sql} gave {got!r}, expected {expected!r} after {timeout} s")


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _start_cluster(root: Path, name: str) -> tuple[Path, int]:
    data, port = root / name, free_port()
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-N",
                                 "-E", "UTF8", "--locale=C"]), check=True, capture_output=True, timeout=120)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                   "wal_level = logical\nmax_wal_senders = 10\nmax_replication_slots = 10\nfsync = off\n"
                   "synchronous_commit = off\nfull_page_writes = off\nshared_buffers = 32MB\n"
                   "wal_receiver_status_interval = 1s\nmax_logical_replication_workers = 4\n")
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / f"{name}.log"), "-w",
                                 "-t", "60", "start"]), check=True, capture_output=True, timeout=90)
    return data, port


def _stop_cluster(data: Path) -> None:
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                   capture_output=True, timeout=60)


USERS_DDL = "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, age int)"


@pytest.fixture(scope="session")
def replica_pair():
    """(publisher, subscriber) URLs of database `app`, with table users (1,000 rows) replicated."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL binaries in {PG_BIN} (set MA_TEST_PG_BIN)")
    root = Path(tempfile.mkdtemp(prefix="ma-replicas-"))
    os.chmod(root, 0o777)
    if os.geteuid() == 0:
        shutil.chown(root, user=pwd.getpwnam("postgres").pw_uid)
    started = []
    try:
        for name in ("publisher", "subscriber"):
            started.append(_start_cluster(root, name))
        (_, pub_port), (_, sub_port) = started
        urls = [f"postgresql://postgres@127.0.0.1:{p}/app" for p in (pub_port, sub_port)]
        for port in (pub_port, sub_port):
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as c:
                c.execute("CREATE DATABASE app")
        with psycopg.connect(urls[0], autocommit=True) as c:
            c.execute(USERS_DDL)
            c.execute("INSERT INTO users SELECT g, 'user' || g || '@example.com', g % 90 FROM generate_series(1, 1000) g")
            c.execute("CREATE PUBLICATION app_pub FOR TABLE users")
        with psycopg.connect(urls[1], autocommit=True) as c:
            c.execute(USERS_DDL)
            c.execute(f"CREATE SUBSCRIPTION app_sub CONNECTION 'host=127.0.0.1 port={pub_port} dbname=app "
                      "user=postgres' PUBLICATION app_pub")
        pair = ReplicaPair(*urls)
        pair.wait_replicated("SELECT count(*) FROM users", 1000, timeout=60)
        yield pair
    finally:
        for data, _ in reversed(started):
            _stop_cluster(data)
        shutil.rmtree(root, ignore_errors=True)
