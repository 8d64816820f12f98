"""Generic SQL shared by the engines that speak it; each engine module overrides what differs."""
from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, Iterator, Sequence

import pyarrow as pa

from connectors.base import Column, DdlLock, KeyRange, RowFilter, TableSchema


class SqlConnector:
    engine = "sql"
    json_verbatim = True
    quote_char = '"'
    param = "%s"

    # --- to implement per engine ------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        raise NotImplementedError

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def transaction(self, statements: Sequence[str]) -> None:
        raise NotImplementedError

    def hashes_in_place(self, schema: TableSchema, existing: TableSchema | None = None) -> bool:
        """Whether verify can hash staged rows in the engine (in_place_checksum) instead of reading
        them back; with `existing`, when the staging table takes that table's column types."""
        return False

    # --- shared -------------------------------------------------------------------
    def q(self, name: str) -> str:
        c = self.quote_char
        return c + name.replace(c, c + c) + c

    def columns_sql(self, schema: TableSchema) -> str:
        return self.names_sql(schema.column_names)

    def names_sql(self, names: Sequence[str]) -> str:
        return ", ".join(self.q(c) for c in names)

    def range_sql(self, where: KeyRange) -> tuple[str, list]:
        if where.key is None:
            return "1=1", []
        parts, params = [], []
        if where.lo is not None:
            parts.append(f"{self.q(where.key)} >= {self.param}")
            params.append(where.lo)
        if where.hi is not None:
            parts.append(f"{self.q(where.key)} {'<' if where.hi_excluded else '<='} {self.param}")
            params.append(where.hi)
        if parts and where.nulls:
            return f"({' AND '.join(parts)} OR {self.q(where.key)} IS NULL)", params
        return (" AND ".join(parts) or "1=1"), params

    def filter_sql(self, where: RowFilter) -> tuple[str, list]:
        sql, params = self.range_sql(where.range)
        if where.watermark:
            wm = self.q(where.watermark)
            if where.after is not None:
                sql += f" AND {wm} > {self.param}"
                params.append(self.watermark_param(where.after))
            if where.upto is not None:
                sql += f" AND {wm} <= {self.param}"
                params.append(self.watermark_param(where.upto))
        return sql, params

    def watermark_param(self, value):
        return value

    # --- keyset pages ---------------------------------------------------------------
    # key types whose values, as read back, compare in this engine's SQL as the stored ones do
    # and sort as its ORDER BY sorts them; none by default (a ClickHouse key need not be unique,
    # and a page ending inside a run of equal keys would lose the rest of the run)
    pageable_key_types: frozenset[str] = frozenset()

    def pageable_column(self, col) -> bool:
        return col.type in self.pageable_key_types

    def pageable(self, schema: TableSchema) -> bool:
        return bool(schema.primary_key) and all(self.pageable_column(schema.column(k)) for k in schema.primary_key)

    def read_in_key_pages(self, schema: TableSchema, where: RowFilter, page_rows: int,
                          read_page: Callable[[str, list, str], Iterator[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
        """The rows `where` selects, in primary-key order, `page_rows` at a time; each page starts after
        the last key of the one before (keyset paging), so a reader holds a page, not the range.
        read_page(condition, params, order_and_limit) yields one page's batches."""
        keys = schema.primary_key
        cond, params = self.filter_sql(where)
        order = f" ORDER BY {self.names_sql(keys)} LIMIT {page_rows}"
        after = None
        while True:
            page_cond, page_params = self._after_key(keys, after)
            rows = 0
            for batch in read_page(f"{cond} AND {page_cond}", params + page_params, order):
                rows += batch.num_rows
                if batch.num_rows:
                    after = [batch.column(k)[-1].as_py() for k in keys]
                yield batch
            if rows < page_rows:
                return

    def _after_key(self, keys: tuple[str, ...], values: list | None) -> tuple[str, list]:
        """Rows whose key sorts after `values`: (k1 > v1) OR (k1 = v1 AND k2 > v2) ..., led by
        k1 >= v1 so the server reads a range of the key."""
        if values is None:
            return "1=1", []
        ors, params = [], []
        for i, k in enumerate(keys):
            ors.append(" AND ".join([f"{self.q(e)} = {self.param}" for e in keys[:i]] + [f"{self.q(k)} > {self.param}"]))
            params += values[:i + 1]
        return f"{self.q(keys[0])} >= {self.param} AND ({' OR '.join(ors)})", [values[0], *params]

    def key_bounds(self, table: str, key: str) -> tuple[int | None, int | None, int]:
        k = self.q(key)
        lo, hi, n = self.query(f"SELECT min({k}), max({k}), count(*) FROM {self.q(table)}")[0]
        return (None if lo is None else int(lo)), (None if hi is None else int(hi)), int(n)

    def orders_bytewise(self, table: str | None, column: Column) -> bool:
        """Whether this engine compares and sorts `column` of `table` (None: of a table it would
        create) in the byte order of its UTF-8 text, so that a range of it selects the same rows here
        as in another engine that does."""
        return False

    def key_starts(self, table: str, key: str, every: int) -> list:
        """Every `every`-th value of `key` in the engine's order, from the first: where chunks start.
        Each is found from the one before by a hop along the key's index (OFFSET), so the key column
        is read once in order; a value repeated more than `every` times (the head of a composite key)
        is one start."""
        k, p = self.q(key), self.param

        def first(condition: str, params: list, skip: int = 0):
            rows = self.query(f"SELECT {k} FROM {self.q(table)} WHERE {condition} ORDER BY {k} LIMIT 1 OFFSET {skip}",
                              params)
            return rows[0][0] if rows else None

        starts, value = [], first(f"{k} IS NOT NULL", [])
        while value is not None:
            starts.append(value)
            value = first(f"{k} >= {p}", [value], int(every))
            if value is not None and value == starts[-1]:
                value = first(f"{k} > {p}", [value])
        return [str(v) if isinstance(v, uuid.UUID) else v for v in starts]

    def max_value(self, table: str, column: str):
        return self.query(f"SELECT max({self.q(column)}) FROM {self.q(table)}")[0][0]

    def count_rows(self, table: str, where: KeyRange = KeyRange()) -> int:
        cond, params = self.range_sql(where)
        return int(self.query(f"SELECT count(*) FROM {self.q(table)} WHERE {cond}", params)[0][0])

    def write_batches(self, schema: TableSchema, batches: Iterable[pa.RecordBatch]) -> None:
        """Load `batches` into `schema.name`, one after the other; engines with a streaming bulk
        path override this."""
        for batch in batches:
            self.write_batch(schema, batch)

    def drop_table(self, table: str) -> None:
        self.execute(f"DROP TABLE IF EXISTS {self.q(table)}")

    def delete_range(self, table: str, where: KeyRange) -> None:
        if self.count_rows(table, where):
            cond, params = self.range_sql(where)
            self.execute(self.delete_sql(table, cond), params)

    defer_primary_key = False  # True where loading first and indexing after is faster

    def add_primary_key(self, table: str, columns: Sequence[str]) -> None:
        self.execute(f"ALTER TABLE {self.q(table)} ADD PRIMARY KEY ({', '.join(self.q(c) for c in columns)})")

    def create_table(self, schema: TableSchema, with_key: bool = True) -> None:
        cols = [self.column_definition(c, schema) for c in schema.columns]
        if schema.primary_key and with_key:
            cols.append(f"PRIMARY KEY ({', '.join(self.q(k) for k in schema.primary_key)})")
        self.execute(f"CREATE TABLE {self.q(schema.name)} ({', '.join(cols)})")

    def column_definition(self, col: Column, schema: TableSchema) -> str:
        return f"{self.q(col.name)} {self.column_ddl(col)}{'' if col.nullable else ' NOT NULL'}{self.column_note(col)}"

    def add_column(self, table: str, column: Column) -> None:
        definition = self.column_definition(column, TableSchema(table, (column,)))
        self.execute(f"ALTER TABLE {self.q(table)} ADD COLUMN {definition}")

    def column_note(self, col) -> str:
        """DDL after a column's type that records a logical type the engine's own type loses."""
        return ""

    def swap_in(self, staging: str, target: str, backup: str | None) -> None:
        """Make `staging` the table called `target`; the old target (if any) becomes `backup`. Atomic."""
        statements = []
        if backup:
            statements.append(f"ALTER TABLE {self.q(target)} RENAME TO {self.q(backup)}")
        statements.append(f"ALTER TABLE {self.q(staging)} RENAME TO {self.q(target)}")
        self.transaction(statements)

    def table_id(self, table: str) -> str | None:
        """What identifies a table's rows through renames, for engines whose swap is more than one
        atomic statement (ClickHouse); None here, where the table names alone tell how far a swap got."""
        return None

    def table_named_by_id(self, table_id: str) -> str | None:
        raise NotImplementedError(f"{self.engine} tables have no identity apart from their names")

    def save_prior_rows(self, target: str, staging: str, backup: str, keys: Sequence[str], deleted: str | None) -> None:
        """Copy into a new table `backup` the rows of `target` that an upsert of `staging` (and of the
        `deleted` keys) replaces: what undo_upsert puts back."""
        self.create_table_like(target, backup)
        self.execute(f"INSERT INTO {self.q(backup)} SELECT * FROM {self.q(target)} "
                     f"WHERE {self._touched_sql(target, staging, keys, deleted)}")

    def apply_upsert(self, target: str, staging: str, keys: Sequence[str], deleted: str | None) -> None:
        """Replace rows of `target` by those of `staging` with the same primary key (all its columns),
        and drop the `deleted` keys; one transaction where the engine has them."""
        self.transaction(self.upsert_statements(target, staging, keys, deleted))

    def upsert_statements(self, target: str, staging: str, keys: Sequence[str], deleted: str | None) -> list[str]:
        return [self.delete_sql(target, self._touched_sql(target, staging, keys, deleted)),
                f"INSERT INTO {self.q(target)} SELECT * FROM {self.q(staging)}"]

    def delete_sql(self, table: str, condition: str) -> str:
        return f"DELETE FROM {self.q(table)} WHERE {condition}"

    def _touched_sql(self, target: str, staging: str, keys: Sequence[str], other: str | None) -> str:
        """A condition on rows of `target`: their key is in `staging` or in table `other` (the deleted
        keys, or the prior rows)."""
        k = self.names_sql(keys)
        touched = f"SELECT {k} FROM {self.q(staging)}" + (f" UNION ALL SELECT {k} FROM {self.q(other)}" if other else "")
        return self.keys_in_sql(target, keys, touched)

    def keys_in_sql(self, table: str, keys: Sequence[str], select_sql: str) -> str:
        """A condition on rows of `table`: their key is among those `select_sql` returns."""
        return f"({self.names_sql(keys)}) IN ({select_sql})"

    def undo_upsert(self, target: str, staging: str, backup: str, keys: Sequence[str]) -> None:
        """Return `target` to its state before `apply_upsert`, from the rows save_prior_rows kept. Right
        however far apply_upsert got (even not at all), and when repeated."""
        replaced = self._touched_sql(target, staging, keys, backup)  # the rows upserted, and those it removed
        self.transaction([self.delete_sql(target, replaced), f"INSERT INTO {self.q(target)} SELECT * FROM {self.q(backup)}"])

    # --- schema migrations (DDL): engine details the engine-agnostic tasks ask for --------------
    sqlglot_dialect = "postgres"
    transactional_ddl = False  # True: a script can run in one transaction and be rolled back
    ddl_locks: dict[str, DdlLock] = {}  # statement kind (tasks.schema_validate.KINDS) -> what it locks
    schema_copy_sql = "CREATE TABLE {new} LIKE {old}"  # how a dry run copies a table's schema elsewhere

    def runs_outside_transaction(self, statement: str) -> bool:
        """True for statements the engine refuses inside a transaction block."""
        return False

    def transactional_equivalent(self, statement: str) -> str | None:
        """The statement as it may run inside a rolled-back dry-run transaction (None: skip it)."""
        return statement

    def run_ddl(self, statements: Sequence[str], in_transaction: bool, lock_timeout_s: float,
                statement_timeout_s: float, rollback: bool = False) -> None:
        """Run `statements` with a lock timeout and a statement timeout; raise DdlFailed naming the
        statement. `in_transaction` (engines with transactional DDL): all or nothing; `rollback`: roll
        the transaction back at the end (a dry run)."""
        raise NotImplementedError

    def cleanup_failed(self, statement: str) -> None:
        """Undo what a failed non-transactional statement left half done, so that it can be retried."""

    def default_probes(self) -> list[str]:
        """Probe queries measured before and after a schema change when the database names none."""
        return ["SELECT 1"]

    def health(self) -> dict:
        """{"active_connections": int, "replication_lag_seconds": float | None, "replicating": bool | None}."""
        raise NotImplementedError

    def table_size(self, table: str) -> tuple[int, int | None]:
        """(estimated rows, bytes on disk or None when the engine cannot tell) of `table`; (0, 0) when it
        does not exist."""
        raise NotImplementedError

    def history_types(self) -> tuple[str, str]:
        """Column types of the `_schema_migration_history` table: (text, timestamp)."""
        return "text", "timestamp"

    def create_history_table(self, table: str) -> None:
        text, ts = self.history_types()
        cols = ", ".join(f"{self.q(c)} {ts if c.endswith('_at') else text}" for c in HISTORY_COLUMNS)
        self.execute(f"CREATE TABLE IF NOT EXISTS {self.q(table)} ({cols}){self.history_table_suffix()}")

    def history_table_suffix(self) -> str:
        return ""

    def scratch_database(self, name: str):
        """(a connector to a new empty database `name` on the same server, drop function)."""
        from dataclasses import replace

        import connectors
        self.execute(f"CREATE DATABASE {self.q(name)}")
        scratch = connectors.connect(replace(self.endpoint, database=name, label=f"{self.endpoint.label} (dry run)"))

        def drop() -> None:
            scratch.close()
            self.execute(f"DROP DATABASE IF EXISTS {self.q(name)}")
        return scratch, drop


# The history each schema-migration target keeps (one row per event: applied or rolled-back)
HISTORY_COLUMNS = ("migration_name", "checksum", "action", "applied_at", "applied_by", "execution_id", "phase",
                   "reason")
