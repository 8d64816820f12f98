"""The protocol every engine module implements, and the schema model they share.

A connector speaks one engine's dialect. Everything above `connectors/` works in
terms of `TableSchema` (logical column types) and Arrow record batches in the
canonical form defined in `connectors.canonical`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterable, Iterator, Protocol, Sequence

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from connectors.canonical import Checksum

LOGICAL_TYPES = {
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64", "decimal", "string", "char", "date", "timestamp",
    "timestamptz", "uuid", "json", "binary",
}
INTEGER_TYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


class MigrationError(Exception):
    """An error a user can act on. `transient` errors are worth a retry."""

    transient = False


class TransientError(MigrationError):
    transient = True


class ConnectionFailed(MigrationError):
    """Endpoint unreachable or credentials refused: names the endpoint, never the password."""


class TableNotFound(MigrationError):
    pass


class UnsupportedType(MigrationError):
    pass


class LossyConversion(MigrationError):
    """The destination cannot hold a column's values exactly."""


class VerificationFailed(MigrationError):
    pass


class DdlFailed(MigrationError):
    """A schema-migration statement failed. `index` is the statement's place in the list it was
    run from; `position` (1-based character) or `line` (1-based) locate the error within that
    statement when the engine reports it. Lock timeouts and lost connections are transient."""

    def __init__(self, message: str, index: int | None = None, position: int | None = None,
                 line: int | None = None, transient: bool = False, detail: str = ""):
        super().__init__(message)
        self.index, self.position, self.line, self.transient = index, position, line, transient
        self.detail = detail or message  # the engine's own words, without endpoint or statement number


@dataclass(frozen=True)
class DdlLock:
    """What an engine does when running one kind of DDL: the lock it takes, whether that blocks
    writes (or reads) for the whole operation, and what to do instead."""

    lock: str
    blocks_writes: bool = False
    rewrites: bool = False  # the table is copied or rewritten (duration grows with table size)
    recommendation: str = ""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    precision: int | None = None  # decimal digits
    scale: int | None = None
    length: int | None = None  # char/varchar length

    def __post_init__(self):
        if self.type not in LOGICAL_TYPES:
            raise UnsupportedType(f"column {self.name!r}: unknown logical type {self.type!r}")

    def with_type(self, type_: str, **kw) -> "Column":
        return replace(self, type=type_, **kw)

    def describe(self) -> str:
        if self.type == "decimal":
            return f"decimal({self.precision},{self.scale})" if self.precision else "decimal"
        if self.length and self.type in ("string", "char"):
            return f"{self.type}({self.length})"
        return self.type


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def renamed(self, name: str) -> "TableSchema":
        return replace(self, name=name)

    @property
    def chunk_key(self) -> str | None:
        """The integer column chunks split on by range: the primary key's first column, when it is an
        integer. For a composite key every row of one leading value falls in one chunk."""
        if self.primary_key and self.column(self.primary_key[0]).type in INTEGER_TYPES:
            return self.primary_key[0]
        return None


@dataclass(frozen=True)
class KeyRange:
    """Rows with lo <= key <= hi (key < hi when `hi_excluded`; either bound None means open), and with
    `nulls` also the rows whose key is NULL (SQLite lets a composite primary key hold NULL). key None
    means the whole table. Bounds are integers, or text the engines on both sides compare byte by byte."""

    key: str | None = None
    lo: object | None = None
    hi: object | None = None
    nulls: bool = False
    hi_excluded: bool = False

    def label(self) -> str:
        if self.key is None or (self.lo is None and self.hi is None):
            return "all rows"
        if self.lo is None:
            return f"{self.key} {'<' if self.hi_excluded else '<='} {self.hi}" + (" or NULL" if self.nulls else "")
        if self.hi is None:
            return f"{self.key} >= {self.lo}"
        return f"{self.key} in [{self.lo}, {self.hi}{')' if self.hi_excluded else ']'}"


@dataclass(frozen=True)
class RowFilter:
    """What extract reads: a key range, optionally restricted to a watermark window."""

    range: KeyRange = field(default_factory=KeyRange)
    watermark: str | None = None
    after: object | None = None  # exclusive lower bound of the watermark
    upto: object | None = None  # inclusive upper bound


class Connector(Protocol):
    """One engine. Implementations live in connectors/<engine>.py."""

    engine: str
    json_verbatim: bool  # True when JSON text reads back exactly as written

    def close(self) -> None: ...
    def check_access(self, write: bool) -> None: ...
    def list_tables(self) -> list[str]: ...
    def table_exists(self, table: str) -> bool: ...
    def describe(self, table: str) -> TableSchema: ...
    def key_bounds(self, table: str, key: str) -> tuple[int | None, int | None, int]: ...
    def orders_bytewise(self, table: str | None, column: Column) -> bool: ...
    def key_starts(self, table: str, key: str, every: int) -> list: ...
    def max_value(self, table: str, column: str) -> object | None: ...
    def read_batches(self, schema: TableSchema, where: RowFilter, batch_rows: int) -> Iterator[pa.RecordBatch]: ...
    def column_ddl(self, column: Column) -> str: ...
    defer_primary_key: bool  # create staging without the key, add it after loading

    def create_table(self, schema: TableSchema, with_key: bool = True) -> None: ...
    def add_primary_key(self, table: str, columns: Sequence[str]) -> None: ...
    def create_table_like(self, existing: str, new: str) -> None: ...
    def drop_table(self, table: str) -> None: ...
    def delete_range(self, table: str, where: KeyRange) -> None: ...
    def write_batch(self, schema: TableSchema, batch: pa.RecordBatch) -> None: ...
    def write_batches(self, schema: TableSchema, batches: Iterable[pa.RecordBatch]) -> None: ...
    def check_values(self, schema: TableSchema, batch: pa.RecordBatch) -> None: ...
    # verify without reading back: where hashes_in_place(schema, existing), in_place_checksum sums
    # in the engine the hashes in_place_row_hashes computes over Arrow, for the rows `where` selects
    def hashes_in_place(self, schema: TableSchema, existing: TableSchema | None = None) -> bool: ...
    def in_place_row_hashes(self, batch: pa.RecordBatch, schema: TableSchema) -> np.ndarray: ...
    def in_place_checksum(self, schema: TableSchema, where: RowFilter) -> "Checksum": ...
    def add_column(self, table: str, column: Column) -> None: ...
    # publishing (tasks/publish.py): a swap for full runs, an upsert for incremental ones, and their undo
    def swap_in(self, staging: str, target: str, backup: str | None) -> None: ...
    def table_id(self, table: str) -> str | None: ...
    def table_named_by_id(self, table_id: str) -> str | None: ...
    def save_prior_rows(self, target: str, staging: str, backup: str, keys: Sequence[str], deleted: str | None) -> None: ...
    def apply_upsert(self, target: str, staging: str, keys: Sequence[str], deleted: str | None) -> None: ...
    def undo_upsert(self, target: str, staging: str, backup: str, keys: Sequence[str]) -> None: ...
    def count_rows(self, table: str) -> int: ...
