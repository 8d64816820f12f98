"""PostgreSQL: reads through ADBC (binary COPY straight into Arrow); writes binary COPY encoded by ADBC,
or CSV COPY for tables whose column types have no binary encoding here (connectors/postgres_copy.py)."""
from __future__ import annotations

import contextlib
import io
import re
from typing import Iterable, Iterator, Sequence

import adbc_driver_manager as adbc_errors
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql as psql

from connectors.base import (
    Column, ConnectionFailed, DdlFailed, DdlLock, LossyConversion, MigrationError, RowFilter, TableNotFound, TableSchema,
    TransientError, UnsupportedType,
)
from connectors import postgres_hash, postgres_stream
from connectors.canonical import Checksum, conform
from connectors.endpoint import Endpoint
from connectors.postgres_adbc import AdbcPostgres
from connectors.postgres_copy import LAYOUT_SQL, binary_layout, csv_ready, for_binary_copy
from connectors.sql import SqlConnector

ADBC_BATCH_BYTES = 4 << 20
# Row hashes run in one process per query: the flow already hashes `parallel` chunks at once, and
# PostgreSQL's parallel workers on top cost CPU a busy server does not have (4 chunks of 250,000
# rows, 2 at a time on 2 cores: 0.56 CPU-s and 0.29 s without workers, 0.64 and 0.35 s with them)
HASH_IN_ONE_PROCESS = "SET LOCAL max_parallel_workers_per_gather = 0"
_MICROSECOND_TYPES = ("timestamp", "timestamptz", "time", "timetz")
_BYTEWISE_LOCALES = {"C", "POSIX", "C.UTF-8", "C.utf8"}  # libc locales whose text order is byte order
TRANSIENT_SQLSTATES = {"40001", "40P01", "57P01", "57P02", "57P03", "55P03", "08000", "08003", "08006"}
PERMISSION_SQLSTATES = {"42501"}

_TYPES = {
    "smallint": "int16", "integer": "int32", "bigint": "int64", "real": "float32",
    "double precision": "float64", "boolean": "bool", "text": "string", "date": "date",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
    "uuid": "uuid", "json": "json", "jsonb": "json", "bytea": "binary",
}
_DDL = {
    "bool": "boolean", "int8": "smallint", "int16": "smallint", "int32": "integer", "int64": "bigint",
    "uint8": "smallint", "uint16": "integer", "uint32": "bigint", "uint64": "numeric(20,0)",
    "float32": "real", "float64": "double precision", "date": "date", "timestamp": "timestamp(6)",
    "timestamptz": "timestamptz(6)", "uuid": "uuid", "json": "jsonb", "binary": "bytea",
}


def transient_sqlstate(sqlstate: str | None) -> bool:
    """Worth a retry: TRANSIENT_SQLSTATES, and the states psycopg files as OperationalError (out of
    memory, too many connections, a cancelled statement, a lost connection)."""
    if not sqlstate:
        return False
    if sqlstate in TRANSIENT_SQLSTATES:
        return True
    try:
        return issubclass(psycopg.errors.lookup(sqlstate), psycopg.OperationalError)
    except KeyError:
        return False


class PostgresConnector(SqlConnector):
    engine = "postgres"
    json_verbatim = False  # jsonb reorders keys and drops whitespace
    defer_primary_key = True  # COPY into a bare table, then one index build: about 30% faster

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self._adbc = self._adbc_writer = None
        with self.errors("connect"):
            self.conn = psycopg.connect(
                host=endpoint.host, port=endpoint.port, user=endpoint.user, password=endpoint.secret() or None,
                dbname=endpoint.database or "postgres", autocommit=True, connect_timeout=10,
                application_name="migration-assistant",
            )
        self.schema_name = "public"

    def close(self) -> None:
        for c in (self._adbc, self._adbc_writer, self.conn):
            with contextlib.suppress(Exception):
                c.close()

    @contextlib.contextmanager
    def errors(self, doing: str):
        """Translate driver errors into ours, without the password."""
        try:
            yield
        except MigrationError:
            raise
        except psycopg.Error as exc:
            state = getattr(exc, "sqlstate", None)
            msg = f"{self.endpoint.label}: {doing} failed: {self.endpoint.redact(str(exc).strip())}"
            if doing == "connect":
                raise ConnectionFailed(msg) from None
            if transient_sqlstate(state) or isinstance(exc, psycopg.OperationalError):
                raise TransientError(msg) from None
            if state == "42P01":
                raise TableNotFound(msg) from None
            raise MigrationError(msg) from None
        except adbc_errors.Error as exc:  # the ADBC read path raises its own DB-API errors
            msg = f"{self.endpoint.label}: {doing} failed: {self.endpoint.redact(str(exc).strip())}"
            if doing == "connect":
                raise ConnectionFailed(msg) from None
            # ADBC files every server error as OperationalError: its SQLSTATE tells; without one, the
            # connection or the client failed
            state = getattr(exc, "sqlstate", None)
            lost = isinstance(exc, (adbc_errors.OperationalError, adbc_errors.InterfaceError))
            if transient_sqlstate(state) if state else lost:
                raise TransientError(msg) from None
            if state == "42P01":
                raise TableNotFound(msg) from None
            raise MigrationError(msg) from None

    # --- plumbing -------------------------------------------------------------
    def execute(self, sql: str, params: Sequence = ()) -> None:
        with self.errors("statement"):
            self.conn.execute(sql, params or None)

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self.errors("query"):
            return self.conn.execute(sql, params or None).fetchall()

    def transaction(self, statements: Sequence[str]) -> None:
        with self.errors("transaction"), self.conn.transaction():
            for s in statements:
                self.conn.execute(s)

    def literal(self, value) -> str:
        return psql.Literal(value).as_string(self.conn)

    @property
    def adbc(self):
        """The ADBC connection reads go through."""
        if self._adbc is None:
            self._adbc = self._adbc_connect()
        return self._adbc

    @property
    def adbc_writer(self):
        """A second ADBC connection for binary COPY writes: the same endpoint may be read meanwhile."""
        if self._adbc_writer is None:
            self._adbc_writer = self._adbc_connect()
        return self._adbc_writer

    def _adbc_connect(self) -> AdbcPostgres:
        e = self.endpoint
        # Arrow strings are UTF-8, and ADBC passes their bytes through as they are: the server must
        # take them as UTF-8 (a LATIN1 database would otherwise store each byte as a character)
        kwargs = {"host": e.host, "port": e.port, "user": e.user, "dbname": e.database or "postgres",
                  "application_name": "migration-assistant", "client_encoding": "UTF8"}
        if e.secret():
            kwargs["password"] = e.secret()
        dsn = " ".join(f"{k}={_conninfo_quote(str(v))}" for k, v in kwargs.items() if v is not None)
        with self.errors("connect"):
            return AdbcPostgres(dsn)

    # --- introspection --------------------------------------------------------
    def check_access(self, write: bool) -> None:
        self.query("SELECT 1")
        if write:
            ok = self.query("SELECT has_schema_privilege(current_schema(), 'CREATE')")[0][0]
            if not ok:
                raise MigrationError(f"{self.endpoint.label}: user {self.endpoint.user!r} may not create tables in the current schema")

    def list_tables(self) -> list[str]:
        rows = self.query("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                          "AND table_type = 'BASE TABLE' ORDER BY table_name")
        return [r[0] for r in rows]

    def table_exists(self, table: str) -> bool:
        return bool(self.query("SELECT to_regclass(%s) IS NOT NULL", [self.q(table)])[0][0])

    def orders_bytewise(self, table: str | None, column: Column) -> bool:
        """uuid (compared as 16 bytes: the order of its hex text), and text or varchar of a C-like
        libc collation in a UTF-8 database."""
        if column.type not in ("uuid", "string") or not self._stores_utf8:
            return False
        if table is None:
            return column.type == "uuid" or self._default_collation_bytewise()
        rows = self.query(
            "SELECT a.atttypid::regtype::text, c.collname, c.collcollate, c.collprovider FROM pg_attribute a "
            "LEFT JOIN pg_collation c ON c.oid = a.attcollation WHERE a.attrelid = to_regclass(%s) AND a.attname = %s",
            [self.q(table), column.name])
        if not rows or rows[0][0] not in ("uuid", "text", "character varying"):
            return False  # another type (citext compares without case)
        kind, collation, locale, provider = rows[0]
        if kind == "uuid":
            return True
        if collation == "default":
            return self._default_collation_bytewise()
        return provider == "c" and locale in _BYTEWISE_LOCALES

    def _default_collation_bytewise(self) -> bool:
        provider = "datlocprovider" if self.conn.info.server_version >= 150000 else "'c'"
        locale, provider = self.query(f"SELECT datcollate, {provider} FROM pg_database WHERE datname = current_database()")[0]
        return provider == "c" and locale in _BYTEWISE_LOCALES

    def describe(self, table: str) -> TableSchema:
        if not self.table_exists(table):
            raise TableNotFound(f"{self.endpoint.label}: table {table!r} does not exist")
        rows = self.query(
            "SELECT column_name, data_type, is_nullable = 'YES', numeric_precision, numeric_scale, "
            "character_maximum_length FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position", [table])
        pk = self.query(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary "
            "ORDER BY array_position(i.indkey, a.attnum)", [self.q(table)])
        cols = tuple(self._column(table, *r) for r in rows)
        return TableSchema(table, cols, tuple(r[0] for r in pk))

    def _column(self, table, name, data_type, nullable, precision, scale, length) -> Column:
        if data_type == "numeric":
            return Column(name, "decimal", nullable, precision, scale)
        if data_type == "character varying":
            return Column(name, "string", nullable, length=length)
        if data_type == "character":
            return Column(name, "char", nullable, length=length)
        if data_type not in _TYPES:
            raise UnsupportedType(f"{self.endpoint.label}: column {table}.{name} has type {data_type}, "
                                  f"which this tool cannot migrate yet")
        return Column(name, _TYPES[data_type], nullable)

    def column_ddl(self, col: Column) -> str:
        if col.type == "decimal":
            if col.precision and col.precision > 1000:
                raise LossyConversion(f"column {col.name!r}: PostgreSQL numeric holds at most 1000 digits")
            return f"numeric({col.precision},{col.scale or 0})" if col.precision else "numeric"
        if col.type == "string":
            return f"varchar({col.length})" if col.length else "text"
        if col.type == "char":
            return f"char({col.length or 1})"
        return _DDL[col.type]

    def create_table_like(self, existing: str, new: str) -> None:
        self.execute(f"CREATE TABLE {self.q(new)} (LIKE {self.q(existing)} INCLUDING ALL)")

    # --- data -----------------------------------------------------------------
    def _select_expr(self, col: Column) -> str:
        # numeric as the server's text: ADBC turns numeric's binary form into text itself, with
        # about 2.4 times the CPU of numeric_out (0.31 against 0.13 CPU-s per million values)
        if col.type in ("uuid", "json", "decimal"):
            return f"{self.q(col.name)}::text AS {self.q(col.name)}"
        return self.q(col.name)

    def _select_sql(self, table: str, exprs: str, where: RowFilter) -> str:
        cond, params = self.filter_sql(where)
        cond = cond.replace("%s", "{}").format(*(self.literal(p) for p in params))
        return f"SELECT {exprs} FROM {self.q(table)} WHERE {cond}"

    def read_batches(self, schema: TableSchema, where: RowFilter, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        sql = self._select_sql(schema.name, ", ".join(self._select_expr(c) for c in schema.columns), where)
        with self.errors(f"reading {schema.name}"):
            # small batches keep memory bounded by batches in flight, not by the driver's buffer
            for batch in self.adbc.stream(sql, ADBC_BATCH_BYTES):
                yield conform(batch, schema)

    # --- PostgreSQL to PostgreSQL: raw binary COPY, hashed on its way, verified by the server's hash ----
    def column_types(self, table: str) -> dict[str, tuple[str, int]]:
        """column -> (pg_type name, type modifier) of an existing table; timestamps without a stated
        precision hold microseconds, the same as precision 6."""
        rows = self.query(LAYOUT_SQL, [self.q(table)])
        return {name: (typname, 6 if typmod == -1 and typname in _MICROSECOND_TYPES else typmod)
                for name, typname, typmod in rows}

    def can_stream_from(self, source, source_table: str, table: str) -> bool:
        """True when `table` here has exactly the column types of `source_table` on PostgreSQL
        `source` (so one's binary COPY output is the other's input), the stream hasher reads them
        all, and this server's row hash can equal it: PostgreSQL 14 or later (hash_record_extended),
        text stored as the stream carries it (UTF-8)."""
        if not isinstance(source, PostgresConnector) or self.conn.info.server_version < 140000 or not self._stores_utf8:
            return False
        types = self.column_types(table)
        return types == source.column_types(source_table) and postgres_hash.stream_hashes(t for t, _ in types.values())

    def stream_from(self, source: "PostgresConnector", schema: TableSchema, where: RowFilter, table: str,
                    checksum: bool = True) -> tuple[int, int, Checksum]:
        """Copy the rows `where` selects from `schema` on `source` into `table` here, undecoded;
        returns rows and bytes moved and, with `checksum`, the server_checksum of exactly the rows
        copied, hashed as they passed (else a Checksum of the count alone)."""
        columns = schema.column_names
        select = source._select_sql(schema.name, ", ".join(map(self.q, columns)), where)
        if not checksum:
            rows, moved = postgres_stream.pipe(source.endpoint, select, self.endpoint, table, columns)
            return rows, moved, Checksum(rows)
        types = self.column_types(table)
        hasher = postgres_hash.stream_hasher({c: types[c][0] for c in columns})

        def hash_piece(piece: bytes) -> None:
            try:
                hasher.update(piece)
            except ValueError as exc:  # not a stream this hasher can read: a bug, not a fault to retry
                raise MigrationError(f"{source.endpoint.label}: copying {schema.name}: {exc}") from None

        rows, moved = postgres_stream.pipe(source.endpoint, select, self.endpoint, table, columns, hash_piece)
        return rows, moved, _count_and_sum(hasher.finish())

    def server_checksum(self, schema: TableSchema, where: RowFilter) -> Checksum:
        """Count and sum of PostgreSQL's 64-bit hash of each row, computed where the rows are. Only
        comparable with the same sum over a table of identical column types (see can_stream_from)."""
        return self._sum_of_hashes(self._checksum_sql(schema, where))

    def hashes_in_place(self, schema: TableSchema, existing: TableSchema | None = None) -> bool:
        """Whether in_place_checksum covers every column of `schema` (connectors/postgres_hash.py),
        text included: the server stores it as Arrow holds it, in UTF-8."""
        return self._stores_utf8 and postgres_hash.supports(schema, existing)

    @property
    def _stores_utf8(self) -> bool:
        return self.conn.info.parameter_status("server_encoding") in ("UTF8", "SQL_ASCII")

    def in_place_row_hashes(self, batch: pa.RecordBatch, schema: TableSchema) -> np.ndarray:
        """Each row's hash as in_place_checksum computes it here, over Arrow (for the rows a copy sends)."""
        return postgres_hash.row_hashes(batch, schema)

    def in_place_checksum(self, schema: TableSchema, where: RowFilter) -> Checksum:
        """Count and sum of in_place_row_hashes over the rows `where` selects, computed in SQL."""
        return self._sum_of_hashes(self._select_sql(
            schema.name, f"count(*), sum({postgres_hash.checksum_sql(schema, self.q)})", where))

    def _sum_of_hashes(self, sql: str) -> Checksum:
        with self.errors("query"), self.conn.transaction():
            self.conn.execute(HASH_IN_ONE_PROCESS)
            return _count_and_sum(self.conn.execute(sql).fetchone())

    def _checksum_sql(self, schema: TableSchema, where: RowFilter) -> str:
        types = self.column_types(schema.name)
        row_hash = postgres_hash.same_types_checksum_sql({c: types[c][0] for c in schema.column_names}, self.q)
        return self._select_sql(schema.name, f"count(*), sum({row_hash})", where)

    def check_values(self, schema: TableSchema, batch: pa.RecordBatch) -> None:
        for col in schema.columns:
            if col.type in ("string", "char", "json"):
                arr = batch.column(col.name)
                if pc.any(pc.match_substring(arr, "\x00")).as_py():
                    raise LossyConversion(f"column {col.name!r} holds a NUL character, which PostgreSQL text cannot store")

    def write_batch(self, schema: TableSchema, batch: pa.RecordBatch) -> None:
        self.write_batches(schema, [batch])

    def write_batches(self, schema: TableSchema, batches: Iterable[pa.RecordBatch]) -> None:
        """All of `batches` in one binary COPY, encoded by ADBC as they arrive (a COPY per batch
        costs a statement each and keeps more of the stream in flight). Batches whose values have
        no binary form go through CSV COPY on the other connection as they come."""
        layout = binary_layout(self.query(LAYOUT_SQL, [self.q(schema.name)]))
        if layout is None:  # a column type without a binary encoding here
            for batch in self._checked(schema, batches):
                self._write_csv(schema, batch)
            return
        raised: list[Exception] = []  # what the batches raised, rather than ADBC's retelling of it

        def binary() -> Iterator[pa.RecordBatch]:
            try:
                for batch in self._checked(schema, batches):
                    converted = for_binary_copy(batch, layout)
                    if converted is None:
                        self._write_csv(schema, batch)
                    else:
                        yield converted
            except Exception as exc:  # not GeneratorExit: ADBC closes the stream when the COPY fails
                raised.append(exc)
                raise

        try:
            with self.errors(f"loading {schema.name}"):
                self.adbc_writer.append_stream(schema.name, pa.RecordBatchReader.from_batches(layout, binary()))
        except BaseException:
            self._drop_writer()  # ADBC leaves a COPY cut short by its input open, holding the table's lock
            if raised:
                raise raised[0] from None
            raise

    def _checked(self, schema: TableSchema, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if batch.num_rows:
                self.check_values(schema, batch)
                yield batch

    def _drop_writer(self) -> None:
        writer, self._adbc_writer = self._adbc_writer, None
        if writer is not None:
            writer.close()

    def _write_csv(self, schema: TableSchema, batch: pa.RecordBatch) -> None:
        buf = io.BytesIO()
        pacsv.write_csv(csv_ready(batch), buf, pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
        copy = f"COPY {self.q(schema.name)} ({self.columns_sql(schema)}) FROM STDIN (FORMAT csv)"
        with self.errors(f"loading {schema.name}"), self.conn.cursor().copy(copy) as cp:
            cp.write(buf.getbuffer())

    # --- schema migrations ------------------------------------------------------
    sqlglot_dialect = "postgres"
    transactional_ddl = True
    ddl_locks = {
        "create_index": DdlLock("SHARE on the table: blocks writes for the whole build", blocks_writes=True,
                                recommendation="use CREATE INDEX CONCURRENTLY (reads and writes continue)"),
        "create_index_concurrently": DdlLock("SHARE UPDATE EXCLUSIVE: reads and writes continue"),
        "drop_index": DdlLock("ACCESS EXCLUSIVE on the table (brief)",
                              recommendation="use DROP INDEX CONCURRENTLY"),
        "drop_index_concurrently": DdlLock("SHARE UPDATE EXCLUSIVE: reads and writes continue"),
        "add_column": DdlLock("ACCESS EXCLUSIVE (brief, catalog only)"),
        "add_column_rewrite": DdlLock("ACCESS EXCLUSIVE for a full table rewrite", blocks_writes=True, rewrites=True,
                                      recommendation="add the column without a volatile default, then backfill in batches"),
        "add_not_null_no_default": DdlLock("ACCESS EXCLUSIVE; fails if the table has rows",
                                           recommendation="add the column nullable or with a default"),
        "alter_column_type": DdlLock("ACCESS EXCLUSIVE for a full table rewrite (reads and writes blocked)",
                                     blocks_writes=True, rewrites=True,
                                     recommendation="add a new column, backfill in batches, then switch over"),
        "set_not_null": DdlLock("ACCESS EXCLUSIVE while the whole table is scanned", blocks_writes=True,
                                recommendation="add a CHECK (col IS NOT NULL) NOT VALID constraint and VALIDATE it first"),
        "add_constraint": DdlLock("SHARE ROW EXCLUSIVE while existing rows are checked", blocks_writes=True,
                                  recommendation="add it NOT VALID, then VALIDATE CONSTRAINT separately"),
        "drop_column": DdlLock("ACCESS EXCLUSIVE (brief, catalog only); the data is lost"),
        "drop_table": DdlLock("ACCESS EXCLUSIVE; the data is lost"),
        "truncate": DdlLock("ACCESS EXCLUSIVE; every row is removed"),
        "rename": DdlLock("ACCESS EXCLUSIVE (brief); clients using the old name break"),
        "create_table": DdlLock("none on existing tables"),
        "alter_other": DdlLock("ACCESS EXCLUSIVE (most ALTER TABLE forms)"),
    }
    _CONCURRENTLY = re.compile(r"(?is)^\s*((?:CREATE\s+(?:UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX\s+\w+))\s+CONCURRENTLY\b")
    _NO_TRANSACTION = re.compile(r"(?is)^\s*(VACUUM|CREATE\s+DATABASE|DROP\s+DATABASE|ALTER\s+SYSTEM|CLUSTER\b(?!.*\bON\b))")

    def runs_outside_transaction(self, statement: str) -> bool:
        return bool(self._CONCURRENTLY.search(statement) or self._NO_TRANSACTION.search(statement))

    def transactional_equivalent(self, statement: str) -> str | None:
        """CONCURRENTLY dropped (same effect, stronger lock, inside the rolled-back dry run); VACUUM and
        database-level statements have no transactional form and are skipped."""
        if self._CONCURRENTLY.search(statement):
            return self._CONCURRENTLY.sub(r"\1", statement, count=1)
        return None if self._NO_TRANSACTION.search(statement) else statement

    def run_ddl(self, statements, in_transaction, lock_timeout_s, statement_timeout_s, rollback=False) -> None:
        scope = "LOCAL " if in_transaction else ""
        settings = [f"SET {scope}lock_timeout = {int(lock_timeout_s * 1000)}",
                    f"SET {scope}statement_timeout = {int(statement_timeout_s * 1000)}"]
        current = None
        try:
            if in_transaction:
                with self.conn.transaction() as tx:
                    for s in settings:
                        self.conn.execute(s)
                    for current, statement in enumerate(statements):
                        self.conn.execute(statement)
                    current = None
                    if rollback:
                        raise psycopg.Rollback(tx)
            else:
                try:
                    for s in settings:
                        self.conn.execute(s)
                    for current, statement in enumerate(statements):
                        self.conn.execute(statement)
                finally:
                    with contextlib.suppress(psycopg.Error):
                        self.conn.execute("RESET lock_timeout; RESET statement_timeout")
        except psycopg.Error as exc:
            state = getattr(exc, "sqlstate", None)
            position = getattr(exc.diag, "statement_position", None)
            what = "a timeout setting" if current is None else f"statement {current + 1}"
            detail = self.endpoint.redact(str(exc).splitlines()[0]) + (" (lock timeout)" if state == "55P03" else "")
            raise DdlFailed(f"{self.endpoint.label}: {what} failed: {detail}", detail=detail, index=current,
                            position=int(position) if position else None, transient=transient_sqlstate(state) or isinstance(exc, psycopg.OperationalError)) from None

    _CREATE_CONCURRENTLY = re.compile(r"(?is)^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+"
                                      r"(?:IF\s+NOT\s+EXISTS\s+)?(\"[^\"]+\"|\w+)")

    def cleanup_failed(self, statement: str) -> None:
        """A failed CREATE INDEX CONCURRENTLY leaves an invalid index behind: drop it so a retry can run."""
        m = self._CREATE_CONCURRENTLY.search(statement)
        if m and self.query("SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(%s) "
                            "AND NOT indisvalid)", [m.group(1)])[0][0]:
            self.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {m.group(1)}")

    def default_probes(self) -> list[str]:
        return ["SELECT count(*) FROM pg_stat_activity", "SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = current_schema()"]

    def health(self) -> dict:
        """Client connections, and replication lag in seconds: a physical standby's replay delay; for
        a logical subscriber, how long its last message from the publisher took to arrive (None when
        no subscription worker runs); on a primary or publisher, the slowest sender's replay lag."""
        active = self.query("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")[0][0]
        standby, lag = self.query(
            "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN CASE WHEN pg_last_wal_receive_lsn() "
            "= pg_last_wal_replay_lsn() THEN 0 ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END "
            "ELSE (SELECT coalesce(max(EXTRACT(EPOCH FROM replay_lag)), 0) FROM pg_stat_replication) END")[0]
        subs, workers, sub_lag = self.query(
            "SELECT count(*), count(pid), max(GREATEST(0, EXTRACT(EPOCH FROM last_msg_receipt_time - "
            "last_msg_send_time))) FROM pg_stat_subscription WHERE relid IS NULL")[0]
        senders = self.query("SELECT count(*) FROM pg_stat_replication")[0][0]
        if subs:
            replicating = workers == subs
            lag = float(sub_lag or 0) if replicating else None
        else:
            replicating = True if (standby or senders) else None
        return {"active_connections": int(active), "replication_lag_seconds": None if lag is None else float(lag),
                "replicating": replicating}

    def table_size(self, table: str) -> tuple[int, int]:
        row = self.query("SELECT GREATEST(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid) FROM pg_class c "
                         "WHERE c.oid = to_regclass(%s)", [self.q(table)])
        if not row:
            return 0, 0
        rows, size = row[0]
        if rows == 0:  # never analysed: count small tables exactly, trust the size for big ones
            rows = self.count_rows(table) if size < (64 << 20) else size // 100
        return int(rows), int(size)

    def history_types(self) -> tuple[str, str]:
        return "text", "timestamptz"


def _conninfo_quote(value: str) -> str:
    return "'" + re.sub(r"(['\\])", r"\\\1", value) + "'"


def _count_and_sum(row) -> Checksum:
    """The Checksum of a (count, sum of row hashes) result row; the sum is NULL over no rows."""
    rows, total = row
    return Checksum(int(rows), int(total or 0))
