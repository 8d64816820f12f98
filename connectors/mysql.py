"""MySQL and MariaDB: connectorx reads in primary-key pages, multi-row INSERT for writes."""
from __future__ import annotations

import contextlib
import functools
import re
from urllib.parse import quote
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pymysql

from connectors.base import (
    Column, ConnectionFailed, DdlFailed, DdlLock, LossyConversion, MigrationError, RowFilter, TableNotFound, TableSchema,
    TransientError, UnsupportedType,
)
from connectors.canonical import conform
from connectors.endpoint import Endpoint
from connectors.sql import SqlConnector

BATCH_BYTES = 1 << 20  # connectorx decodes a few batches ahead of its reader: batches of about this much data
PAGE_BATCHES = 4  # batches per connectorx query (see read_batches)
_KEY_BYTES = 3072  # InnoDB's longest index key
# code-point order without trailing-space padding (the byte order of UTF-8 text), MariaDB's first
_BYTEWISE_COLLATIONS = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin")
_TEXT_TYPES = {"varchar", "text", "tinytext", "mediumtext", "longtext"}
_SESSION_SETUP = "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"


def _key_bytes(col: Column) -> int:
    """The most bytes a non-text key column takes in an InnoDB key."""
    if col.type in ("char", "uuid"):
        return 4 * (col.length or 36)
    if col.type == "decimal":
        return 32
    if col.type == "binary":
        return col.length or 255
    return 8  # integers, floats, dates and times


class _ReadFailed(pymysql.err.OperationalError):
    """A connectorx read error, classified like a driver error (lost connections retry)."""


# server gone, lost connection, killed, deadlock, lock wait timeout, too many connections
TRANSIENT_CODES = {1040, 1205, 1213, 1927, 2006, 2013, 2055}
ACCESS_DENIED = {1044, 1045, 1142, 1227}

_TYPES = {
    "tinyint": "int8", "smallint": "int16", "mediumint": "int32", "int": "int32", "bigint": "int64",
    "float": "float32", "double": "float64", "date": "date", "datetime": "timestamp",
    "timestamp": "timestamptz", "json": "json", "uuid": "uuid", "text": "string", "tinytext": "string",
    "mediumtext": "string", "longtext": "string", "blob": "binary", "tinyblob": "binary",
    "mediumblob": "binary", "longblob": "binary", "varbinary": "binary", "binary": "binary", "enum": "string",
}
_UNSIGNED = {"tinyint": "uint8", "smallint": "uint16", "mediumint": "uint32", "int": "uint32", "bigint": "uint64"}
_DDL = {
    "bool": "BOOLEAN", "int8": "TINYINT", "int16": "SMALLINT", "int32": "INT", "int64": "BIGINT",
    "uint8": "TINYINT UNSIGNED", "uint16": "SMALLINT UNSIGNED", "uint32": "INT UNSIGNED",
    "uint64": "BIGINT UNSIGNED", "float32": "FLOAT", "float64": "DOUBLE", "date": "DATE",
    "timestamp": "DATETIME(6)", "timestamptz": "DATETIME(6)", "uuid": "CHAR(36)", "json": "JSON",
    "binary": "LONGBLOB",
}


class MySQLConnector(SqlConnector):
    engine = "mysql"
    json_verbatim = False  # MySQL normalises JSON documents
    quote_char = "`"
    pageable_key_types = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                                    "decimal", "date", "timestamp", "timestamptz", "binary"})

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        with self.errors("connect"):
            self.conn = pymysql.connect(
                host=endpoint.host, port=endpoint.port, user=endpoint.user or "root",
                password=endpoint.secret(), database=endpoint.database, charset="utf8mb4",
                autocommit=True, connect_timeout=10, read_timeout=600, write_timeout=600,
                init_command=_SESSION_SETUP,
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    @contextlib.contextmanager
    def errors(self, doing: str):
        try:
            yield
        except MigrationError:
            raise
        except pymysql.MySQLError as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            msg = f"{self.endpoint.label}: {doing} failed: {self.endpoint.redact(str(exc))}"
            if doing == "connect":
                raise ConnectionFailed(msg) from None
            lost = isinstance(exc, _ReadFailed) and re.search(r"(?i)connection|broken pipe|timed out|reset", str(exc))
            if code in TRANSIENT_CODES or lost or isinstance(exc, pymysql.err.InterfaceError):
                raise TransientError(msg) from None
            if code == 1146:
                raise TableNotFound(msg) from None
            raise MigrationError(msg) from None

    def execute(self, sql: str, params: Sequence = ()) -> None:
        with self.errors("statement"), self.conn.cursor() as cur:
            cur.execute(self.bind(sql, params))

    def query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self.errors("query"), self.conn.cursor() as cur:
            cur.execute(self.bind(sql, params))
            return list(cur.fetchall())

    def bind(self, sql: str, params: Sequence) -> str:
        """`sql` with each %s outside `quoted names` replaced by the next parameter, escaped by the
        driver. pymysql's own binding (sql % params) would also read a % inside a name."""
        if not params:
            return sql
        values = iter([self.conn.escape(p) for p in params])
        parts = re.split(r"(`(?:[^`]|``)*`)", sql)
        return "".join(p if p.startswith("`") else re.sub(r"%s", lambda _: next(values), p) for p in parts)

    def transaction(self, statements: Sequence[str]) -> None:
        with self.errors("transaction"):
            self.conn.begin()
            try:
                with self.conn.cursor() as cur:
                    for s in statements:
                        cur.execute(s)
                self.conn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    self.conn.rollback()
                raise

    # --- introspection --------------------------------------------------------
    def check_access(self, write: bool) -> None:
        self.query("SELECT 1")
        if write and self.endpoint.database:
            grants = " ".join(r[0] for r in self.query("SHOW GRANTS")).upper()
            if "ALL PRIVILEGES" not in grants and "CREATE" not in grants:
                raise MigrationError(f"{self.endpoint.label}: user may not create tables in {self.endpoint.database}")

    def list_tables(self) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
            "AND table_type = 'BASE TABLE' ORDER BY table_name")]

    def table_exists(self, table: str) -> bool:
        return bool(self.query("SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                               "AND table_name = %s", [table])[0][0])

    def describe(self, table: str) -> TableSchema:
        if not self.table_exists(table):
            raise TableNotFound(f"{self.endpoint.label}: table {table!r} does not exist")
        rows = self.query(
            "SELECT column_name, data_type, column_type, is_nullable = 'YES', numeric_precision, numeric_scale, "
            "character_maximum_length, column_comment FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = %s ORDER BY ordinal_position", [table])
        json_cols = {r[0] for r in self.query(
            "SELECT check_clause FROM information_schema.check_constraints WHERE constraint_schema = DATABASE() "
            "AND table_name = %s", [table]) if "json_valid" in r[0].lower()} if self._is_mariadb else set()
        cols = tuple(self._column(table, r, json_cols) for r in rows)
        pk = self.query(
            "SELECT column_name FROM information_schema.key_column_usage WHERE table_schema = DATABASE() "
            "AND table_name = %s AND constraint_name = 'PRIMARY' ORDER BY ordinal_position", [table])
        return TableSchema(table, cols, tuple(r[0] for r in pk))

    @property
    def _is_mariadb(self) -> bool:
        return "mariadb" in self.conn.get_server_info().lower()

    def _column(self, table, row, json_checks) -> Column:
        name, data_type, column_type, nullable, precision, scale, length, comment = row
        data_type, column_type = data_type.lower(), column_type.lower()
        if comment in ("ma:timestamptz", "ma:uuid"):  # columns we created note what they hold
            return Column(name, comment[3:], nullable)
        if any(f"json_valid(`{name.lower()}`)" in c for c in json_checks):
            return Column(name, "json", nullable)
        if column_type.startswith("tinyint(1)"):
            return Column(name, "bool", nullable)
        if data_type in ("decimal", "numeric"):
            return Column(name, "decimal", nullable, int(precision), int(scale))
        if data_type == "varchar":
            return Column(name, "string", nullable, length=length)
        if data_type == "char":
            return Column(name, "char", nullable, length=length)
        if "unsigned" in column_type and data_type in _UNSIGNED:
            return Column(name, _UNSIGNED[data_type], nullable)
        if data_type not in _TYPES:
            raise UnsupportedType(f"{self.endpoint.label}: column {table}.{name} has type {column_type}, "
                                  f"which this tool cannot migrate yet")
        return Column(name, _TYPES[data_type], nullable)

    def column_ddl(self, col: Column) -> str:
        if col.type == "decimal":
            if not col.precision or col.precision > 65 or (col.scale or 0) > 30:
                raise LossyConversion(
                    f"column {col.name!r}: {col.describe()} does not fit MySQL DECIMAL (at most 65 digits, "
                    f"scale 30); opt into the lossy cast 'decimal_as_text' to store it as text")
            return f"DECIMAL({col.precision},{col.scale or 0})"
        if col.type == "string":
            return f"VARCHAR({col.length})" if col.length and col.length <= 16383 else "LONGTEXT"
        if col.type == "char":
            return f"CHAR({col.length or 1})"
        if col.type == "uuid" and self._is_mariadb:
            return "UUID"
        return _DDL[col.type]

    def column_definition(self, col: Column, schema: TableSchema) -> str:
        """A text primary-key column becomes VARCHAR short enough for InnoDB's longest key (3072 bytes
        for all its columns, 4 per character), as TEXT cannot be a key; a longer value fails the load,
        naming the column. Its collation compares bytes (without trailing-space padding where the
        server has one): keys the source keeps apart ('a', 'A') stay apart, and ranges of them select
        the same rows as in the source (see orders_bytewise)."""
        text_keys = [k for k in schema.primary_key if schema.column(k).type == "string"]
        if col.name not in text_keys:
            return super().column_definition(col, schema)
        others = sum(_key_bytes(schema.column(k)) for k in schema.primary_key if k not in text_keys)
        length = min(col.length or _KEY_BYTES, (_KEY_BYTES - others) // 4 // len(text_keys))
        return (f"{self.q(col.name)} VARCHAR({length}) CHARACTER SET utf8mb4 COLLATE {self._key_collation}"
                f"{'' if col.nullable else ' NOT NULL'}")

    @functools.cached_property
    def _key_collation(self) -> str:
        """The first of the byte-order collations this server has (MariaDB, MySQL 8.0.17+), else
        utf8mb4_bin (which pads: 'a' and 'a ' are one key)."""
        have = {r[0] for r in self.query("SELECT collation_name FROM information_schema.collations "
                                         "WHERE collation_name IN (%s, %s)", _BYTEWISE_COLLATIONS)}
        return next((c for c in _BYTEWISE_COLLATIONS if c in have), "utf8mb4_bin")

    def orders_bytewise(self, table: str | None, column: Column) -> bool:
        if column.type != "string":
            return False  # MariaDB's UUID type sorts its groups in another order; CHAR pads
        if table is None:
            return self._key_collation in _BYTEWISE_COLLATIONS  # what create_table gives a text key
        rows = self.query("SELECT data_type, collation_name FROM information_schema.columns WHERE table_schema = "
                          "DATABASE() AND table_name = %s AND column_name = %s", [table, column.name])
        # an ENUM sorts by its position in the list, not by its text
        return bool(rows) and rows[0][0].lower() in _TEXT_TYPES and rows[0][1] in _BYTEWISE_COLLATIONS

    def column_note(self, col: Column) -> str:
        if col.type == "timestamptz" or (col.type == "uuid" and not self._is_mariadb):
            return f" COMMENT 'ma:{col.type}'"
        return ""

    def create_table_like(self, existing: str, new: str) -> None:
        self.execute(f"CREATE TABLE {self.q(new)} LIKE {self.q(existing)}")

    def swap_in(self, staging: str, target: str, backup: str | None) -> None:
        renames = ([f"{self.q(target)} TO {self.q(backup)}"] if backup else []) + [f"{self.q(staging)} TO {self.q(target)}"]
        self.execute("RENAME TABLE " + ", ".join(renames))

    # --- data -----------------------------------------------------------------
    def read_batches(self, schema: TableSchema, where: RowFilter, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        """connectorx decodes the rows into Arrow in Rust, several times faster than a Python cursor.

        connectorx reads ahead of its consumer without limit, so batches hold about BATCH_BYTES and
        rows are read in keyset pages of PAGE_BATCHES batches: memory stays bounded by a page however
        many rows the table or range holds. A table without a pageable primary key is read in one query."""
        batch_rows = self._batch_rows(schema.name, batch_rows)

        def read(cond: str, params: list, order_limit: str) -> Iterator[pa.RecordBatch]:
            return self._read(schema, cond, params, batch_rows, order_limit)
        if self.pageable(schema):
            yield from self.read_in_key_pages(schema, where, PAGE_BATCHES * batch_rows, read)
        else:
            yield from read(*self.filter_sql(where), "")

    def pageable_column(self, col: Column) -> bool:
        """VARCHAR is; ENUM (sorted by position, compared as text), TEXT, UUID (read lower-cased) and CHAR
        (read without its trailing spaces, which NO PAD collations compare) are not."""
        return col.type in self.pageable_key_types or (col.type == "string" and col.length is not None)

    def _batch_rows(self, table: str, at_most: int) -> int:
        """Rows per batch for about BATCH_BYTES, by the server's estimate of the table's average row length."""
        found = self.query("SELECT AVG_ROW_LENGTH FROM information_schema.TABLES "
                           "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s", [table])
        row_bytes = int(found[0][0] or 0) if found else 0
        return min(at_most, max(1024, BATCH_BYTES // row_bytes)) if row_bytes else at_most

    def _read(self, schema: TableSchema, cond: str, params: list, batch_rows: int, order_limit: str) -> Iterator[pa.RecordBatch]:
        import connectorx
        cond = self.bind(cond, params)
        exprs = ", ".join(self._select_expr(c) for c in schema.columns)
        sql = f"SELECT {exprs} FROM {self.q(schema.name)} WHERE {cond}{order_limit}"
        with self.errors(f"reading {schema.name}"):
            try:
                reader = connectorx.read_sql(self._connectorx_url(), sql, return_type="arrow_stream",
                                             batch_size=batch_rows, pre_execution_query=[_SESSION_SETUP])
                for batch in reader:
                    yield conform(batch, schema)
            except BaseException as exc:  # Rust panics arrive as BaseException
                if isinstance(exc, (GeneratorExit, KeyboardInterrupt, SystemExit)):
                    raise
                raise _ReadFailed(str(exc).split("\n\nStack backtrace")[0]) from None

    def _connectorx_url(self) -> str:
        e = self.endpoint
        auth = quote(e.user or "root", safe="") + (":" + quote(e.secret(), safe="") if e.secret() else "")
        return f"mysql://{auth}@{e.host}:{e.port}/{quote(e.database or '', safe='')}"

    def _select_expr(self, col: Column) -> str:
        name = self.q(col.name)
        if col.type in ("json", "uuid", "decimal"):  # exact as text; canonical form casts back
            return f"CAST({name} AS CHAR) AS {name}"
        if col.type == "float32":  # FLOAT widened exactly; the text protocol would round it to 6 digits
            return f"CAST({name} AS DOUBLE) AS {name}"
        return name

    def check_values(self, schema: TableSchema, batch: pa.RecordBatch) -> None:
        for col in schema.columns:
            arr = batch.column(col.name)
            if col.type in ("float32", "float64") and pc.any(pc.invert(pc.is_finite(arr))).as_py():
                raise LossyConversion(f"column {col.name!r} holds infinity or NaN, which MySQL cannot store")
            if col.type in ("date", "timestamp", "timestamptz"):
                low = pc.min(arr).as_py()
                if low is not None and low.year < 1000:
                    raise LossyConversion(f"column {col.name!r} holds {low}, before MySQL's earliest date 1000-01-01")

    def write_batch(self, schema: TableSchema, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self.check_values(schema, batch)
        columns = [_python_values(batch.column(c.name)) for c in schema.columns]
        marks = ", ".join(["%s"] * len(columns))
        head = f"INSERT INTO {self.q(schema.name)} ({self.columns_sql(schema)})".replace("%", "%%")  # executemany: head % ()
        sql = f"{head} VALUES ({marks})"
        with self.errors(f"loading {schema.name}"), self.conn.cursor() as cur:
            cur.executemany(sql, list(zip(*columns)))

    def watermark_param(self, value):
        return value.replace(tzinfo=None) if hasattr(value, "tzinfo") and value.tzinfo else value

    # --- schema migrations ------------------------------------------------------
    sqlglot_dialect = "mysql"
    transactional_ddl = False  # every DDL statement commits on its own
    ddl_locks = {
        "create_index": DdlLock("online (ALGORITHM=INPLACE, LOCK=NONE): brief metadata lock, writes continue"),
        "drop_index": DdlLock("brief metadata lock"),
        "add_column": DdlLock("INSTANT or INPLACE: brief metadata lock"),
        "add_column_rewrite": DdlLock("table rebuilt (INPLACE), brief metadata locks", rewrites=True),
        "add_not_null_no_default": DdlLock("table rebuilt; existing rows get the type's zero value", rewrites=True),
        "alter_column_type": DdlLock("ALGORITHM=COPY: table copied, writes blocked (LOCK=SHARED)", blocks_writes=True,
                                     rewrites=True, recommendation="use an online schema-change tool (gh-ost, "
                                     "pt-online-schema-change) or a new column with a backfill"),
        "set_not_null": DdlLock("table rebuilt (INPLACE)", rewrites=True),
        "add_constraint": DdlLock("foreign keys: INPLACE with foreign_key_checks=0, otherwise COPY", blocks_writes=True,
                                  recommendation="add it with SET foreign_key_checks = 0 where you can"),
        "drop_column": DdlLock("table rebuilt (INPLACE); the data is lost", rewrites=True),
        "drop_table": DdlLock("exclusive metadata lock; the data is lost"),
        "truncate": DdlLock("exclusive metadata lock; every row is removed"),
        "rename": DdlLock("exclusive metadata lock (brief); clients using the old name break"),
        "create_table": DdlLock("none on existing tables"),
        "alter_other": DdlLock("metadata lock; may copy the table"),
    }

    def run_ddl(self, statements, in_transaction, lock_timeout_s, statement_timeout_s, rollback=False) -> None:
        if rollback:
            raise MigrationError(f"{self.endpoint.label}: MySQL DDL commits at once and cannot be rolled back")
        timeout = "max_statement_time" if self._is_mariadb else "max_execution_time"
        limit = statement_timeout_s if self._is_mariadb else int(statement_timeout_s * 1000)
        current = None
        try:
            with self.conn.cursor() as cur:
                cur.execute(f"SET SESSION lock_wait_timeout = {max(1, int(lock_timeout_s))}, "
                            f"innodb_lock_wait_timeout = {max(1, int(lock_timeout_s))}, {timeout} = {limit}")
                try:
                    for current, statement in enumerate(statements):
                        cur.execute(statement)
                finally:
                    with contextlib.suppress(pymysql.MySQLError):
                        cur.execute(f"SET SESSION lock_wait_timeout = DEFAULT, innodb_lock_wait_timeout = DEFAULT, "
                                    f"{timeout} = DEFAULT")
        except pymysql.MySQLError as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            text = self.endpoint.redact(str(exc.args[1] if len(exc.args) > 1 else exc))
            line = re.search(r"at line (\d+)", text)
            what = "a timeout setting" if current is None else f"statement {current + 1}"
            raise DdlFailed(f"{self.endpoint.label}: {what} failed: {text}", detail=text, index=current,
                            line=int(line.group(1)) if line else None,
                            transient=code in TRANSIENT_CODES or isinstance(exc, pymysql.err.InterfaceError)) from None

    def default_probes(self) -> list[str]:
        return ["SELECT count(*) FROM information_schema.processlist", "SELECT count(*) FROM "
                "information_schema.tables WHERE table_schema = DATABASE()"]

    def health(self) -> dict:
        """Connected threads; replication lag from the replica status (Seconds_Behind_Master/Source)."""
        active = int(self.query("SHOW GLOBAL STATUS LIKE 'Threads_connected'")[0][1])
        with self.errors("health"), self.conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SHOW SLAVE STATUS" if self._is_mariadb else "SHOW REPLICA STATUS")
            status = cur.fetchall()
        if not status:
            return {"active_connections": active, "replication_lag_seconds": None, "replicating": None}
        lags = [r.get("Seconds_Behind_Master", r.get("Seconds_Behind_Source")) for r in status]
        running = all(r.get("Slave_SQL_Running", r.get("Replica_SQL_Running")) == "Yes" for r in status)
        return {"active_connections": active, "replicating": running,
                "replication_lag_seconds": None if any(x is None for x in lags) else float(max(lags))}

    def table_size(self, table: str) -> tuple[int, int]:
        row = self.query("SELECT table_rows, data_length + index_length FROM information_schema.tables "
                         "WHERE table_schema = DATABASE() AND table_name = %s", [table])
        return (int(row[0][0] or 0), int(row[0][1] or 0)) if row else (0, 0)

    def history_types(self) -> tuple[str, str]:
        return "VARCHAR(255)", "DATETIME(6)"


def _python_values(arr: pa.Array) -> list:
    if pa.types.is_timestamp(arr.type) and arr.type.tz:
        arr = arr.cast(pa.timestamp("us"))  # stored as UTC wall time
    return arr.to_pylist()
