"""ADBC's PostgreSQL driver through the driver manager's low-level API.

The DB-API layer (`adbc_driver_manager.dbapi`) imports pandas, and polars when installed, at
import time: about 50 MB of resident memory the copy never uses. These few calls are all the
connector needs: stream a query's result as Arrow batches, append a stream of batches with one
binary COPY.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import adbc_driver_manager as adbc
import adbc_driver_postgresql
import pyarrow as pa


class AdbcPostgres:
    """One libpq connection driven by ADBC, in autocommit mode (ADBC's default)."""

    def __init__(self, conninfo: str):
        self._db = adbc_driver_postgresql.connect(conninfo)
        try:
            self._conn = adbc.AdbcConnection(self._db)
        except BaseException:
            self._db.close()
            raise

    def stream(self, sql: str, batch_bytes: int) -> Iterator[pa.RecordBatch]:
        """The rows of `sql` as record batches of about `batch_bytes` each, read through binary COPY."""
        stmt = adbc.AdbcStatement(self._conn)
        try:
            stmt.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(batch_bytes)})
            stmt.set_sql_query(sql)
            handle, _ = stmt.execute_query()
            with contextlib.closing(pa.RecordBatchReader._import_from_c(handle.address)) as reader:
                yield from reader
        finally:
            stmt.close()

    def append_stream(self, table: str, batches: pa.RecordBatchReader) -> None:
        """Append every batch of `batches` to the existing `table` (an unquoted name, resolved on the
        search path) in one binary COPY; the batches are pulled as the COPY goes."""
        stmt = adbc.AdbcStatement(self._conn)
        try:
            stmt.set_options(**{"adbc.ingest.target_table": table, "adbc.ingest.mode": "adbc.ingest.mode.append"})
            stmt.bind_stream(batches.__arrow_c_stream__())
            stmt.execute_update()
        finally:
            stmt.close()

    def close(self) -> None:
        for handle in (self._conn, self._db):
            with contextlib.suppress(Exception):
                handle.close()
