"""PostgreSQL to PostgreSQL without decoding: the source's binary COPY output goes straight into
the destination's binary COPY input, when both tables have exactly the same column types.

With a checksum query, a third connection runs it on the source while the rows move, in the very
snapshot the COPY reads (exported by the COPY's transaction): verify then compares the destination
with exactly what was copied, even when the source is being written to, and only the destination
is read again afterwards.

asyncpg is used here because it hands COPY data over in network-sized pieces; psycopg hands it
over one row at a time (about 2 s of Python per million rows). Each call runs its own event loop
on the calling task thread, with two short-lived connections (three with a checksum query).
"""
from __future__ import annotations

import asyncio
from typing import Sequence

import asyncpg

from connectors.base import MigrationError, TransientError
from connectors.endpoint import Endpoint

QUEUE_PIECES = 16  # pieces of COPY data in flight between the two connections (each up to ~64 KB)
# Row hashes run in one process per query: the flow already hashes `parallel` chunks at once, and
# PostgreSQL's parallel workers on top cost CPU a busy server does not have (4 chunks of 250,000
# rows, 2 at a time on 2 cores: 0.56 CPU-s and 0.29 s without workers, 0.64 and 0.35 s with them)
HASH_IN_ONE_PROCESS = "SET LOCAL max_parallel_workers_per_gather = 0"


def pipe(source: Endpoint, select_sql: str, dest: Endpoint, table: str, columns: Sequence[str],
         checksum_sql: str | None = None) -> tuple[int, int, tuple | None]:
    """Copy the rows of `select_sql` on `source` into `table` (`columns`, in the select's order) on
    `dest`; returns the number of rows and of bytes moved, and the row `checksum_sql` gives on the
    source in the COPY's snapshot (None without it). The destination's COPY is one statement: if
    either side fails, none of its rows stay."""
    return asyncio.run(_pipe(source, select_sql, dest, table, list(columns), checksum_sql))


async def _pipe(source: Endpoint, select_sql: str, dest: Endpoint, table: str, columns: list[str],
                checksum_sql: str | None) -> tuple[int, int, tuple | None]:
    src = await _connect(source)
    try:
        dst = await _connect(dest)
        try:
            def copy():
                return _copy(src, source, select_sql, dst, dest, table, columns)
            if checksum_sql is None:
                return *await copy(), None
            return await _hashing_while(copy, src, source, checksum_sql)
        finally:
            await dst.close(timeout=5)
    finally:
        await src.close(timeout=5)


async def _hashing_while(copy, src, source: Endpoint, checksum_sql: str) -> tuple[int, int, tuple]:
    """Run `copy()` inside a snapshot of `src` that `checksum_sql` reads at the same time."""
    with _translated(source, "reading"):
        async with src.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await src.fetchval("SELECT pg_export_snapshot()")
            hashed = asyncio.create_task(_in_snapshot(source, snapshot, checksum_sql))
            try:
                rows, moved = await copy()
            except BaseException:
                hashed.cancel()
                await asyncio.gather(hashed, return_exceptions=True)
                raise
            return rows, moved, await hashed


async def _in_snapshot(source: Endpoint, snapshot: str, sql: str) -> tuple:
    """The row `sql` returns on `source` in the exported `snapshot`."""
    conn = await _connect(source)
    try:
        with _translated(source, "hashing the copied rows"):
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                await conn.execute(HASH_IN_ONE_PROCESS)
                return tuple(await conn.fetchrow(sql))
    finally:
        await conn.close(timeout=5)


async def _copy(src, source: Endpoint, select_sql: str, dst, dest: Endpoint, table: str, columns: list[str]) -> tuple[int, int]:
    queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_PIECES)
    done = object()
    moved = 0

    async def produce() -> None:
        try:
            with _translated(source, "reading"):
                await src.copy_from_query(select_sql, output=lambda data: queue.put(bytes(data)), format="binary")
        except BaseException as exc:  # handed to the consumer, which aborts the destination's COPY
            await queue.put(exc)
            return
        await queue.put(done)

    async def pieces():
        nonlocal moved
        while (piece := await queue.get()) is not done:
            if isinstance(piece, BaseException):
                raise piece
            moved += len(piece)
            yield piece

    producer = asyncio.create_task(produce())
    try:
        with _translated(dest, f"loading {table}"):
            status = await dst.copy_to_table(table, source=pieces(), columns=columns, format="binary")
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
    return int(status.split()[-1]), moved


async def _connect(endpoint: Endpoint):
    with _translated(endpoint, "connect"):
        return await asyncpg.connect(
            host=endpoint.host, port=endpoint.port, user=endpoint.user, password=endpoint.secret() or None,
            database=endpoint.database or "postgres", timeout=10,
            server_settings={"application_name": "migration-assistant"})


class _translated:
    """asyncpg's errors as ours, naming the endpoint, never the password."""

    def __init__(self, endpoint: Endpoint, doing: str):
        self.endpoint, self.doing = endpoint, doing

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, (MigrationError, asyncio.CancelledError)) or not isinstance(exc, Exception):
            return False
        from connectors.postgres import TRANSIENT_SQLSTATES
        msg = f"{self.endpoint.label}: {self.doing} failed: {self.endpoint.redact(str(exc).strip() or type(exc).__name__)}"
        state = getattr(exc, "sqlstate", None)
        if isinstance(exc, asyncpg.PostgresError) and state not in TRANSIENT_SQLSTATES:
            raise MigrationError(msg) from None
        raise TransientError(msg) from None  # lost connection, timeout, server shutting down
