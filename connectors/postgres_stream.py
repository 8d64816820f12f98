"""PostgreSQL to PostgreSQL without decoding: the source's binary COPY output goes straight into
the destination's binary COPY input, when both tables have exactly the same column types.

Verify compares the destination with exactly what was copied, even when the source is being
written to, and reads only the destination again afterwards: the caller hashes the rows on their
way through (`on_piece` gets every piece of COPY data: postgres_hash.stream_hasher).

asyncpg is used here because it hands COPY data over in network-sized pieces; psycopg hands it
over one row at a time (about 2 s of Python per million rows). Each call runs its own event loop
on the calling task thread, with two short-lived connections (three with a checksum query).
"""
from __future__ import annotations

import asyncio
from typing import Callable, Sequence

import asyncpg

from connectors.base import MigrationError, TransientError
from connectors.endpoint import Endpoint

QUEUE_PIECES = 16  # pieces of COPY data in flight between the two connections (each up to ~64 KB)
OnPiece = Callable[[bytes], None]


def pipe(source: Endpoint, select_sql: str, dest: Endpoint, table: str, columns: Sequence[str],
         on_piece: OnPiece | None = None) -> tuple[int, int]:
    """Copy the rows of `select_sql` on `source` into `table` (`columns`, in the select's order) on
    `dest`, handing every piece of COPY data to `on_piece` on its way; returns the number of rows
    and of bytes moved. The destination's COPY is one statement: if either side fails, none of its
    rows stay."""
    return asyncio.run(_pipe(source, select_sql, dest, table, list(columns), on_piece))


async def _pipe(source: Endpoint, select_sql: str, dest: Endpoint, table: str, columns: list[str],
                on_piece: OnPiece | None) -> tuple[int, int]:
    src = await _connect(source)
    try:
        dst = await _connect(dest)
        try:
            return await _copy(src, source, select_sql, dst, dest, table, columns, on_piece)
        finally:
            await dst.close(timeout=5)
    finally:
        await src.close(timeout=5)


async def _copy(src, source: Endpoint, select_sql: str, dst, dest: Endpoint, table: str, columns: list[str],
                on_piece: OnPiece | None) -> tuple[int, int]:
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
            if on_piece is not None:
                on_piece(piece)
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
        from connectors.postgres import transient_sqlstate
        msg = f"{self.endpoint.label}: {self.doing} failed: {self.endpoint.redact(str(exc).strip() or type(exc).__name__)}"
        state = getattr(exc, "sqlstate", None)
        if isinstance(exc, asyncpg.PostgresError) and not transient_sqlstate(state):
            raise MigrationError(msg) from None
        raise TransientError(msg) from None  # lost connection, timeout, server shutting down
