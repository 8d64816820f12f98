"""verify: count and order-independent checksum per chunk on both sides; on a mismatch, find the rows."""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from connectors.base import Connector, MigrationError, RowFilter, TableSchema, VerificationFailed
from connectors.canonical import Checksum, column_hashes, conform, for_checksum, needs_json_canonical, row_hashes
from tasks.connections import using
from tasks.copy import BATCH_ROWS, ChunkResult
from tasks.plan import TablePlan
from tasks.retry import RETRY_POLICY

MAX_REPORTED_KEYS = 20
GROUPS = 4096  # a mismatch is narrowed by comparing rows in groups (by key hash) first
MAX_EXAMINED_ROWS = 100_000  # rows per side compared one by one to name the rows that differ


def checksum(conn: Connector, schema: TableSchema, where: RowFilter, json_canonical: bool,
             as_schema: TableSchema | None = None) -> Checksum:
    """Count and checksum of the rows `where` selects; with `as_schema`, of those rows converted to
    it first (the lossy casts copy applied)."""
    total = Checksum()
    for batch in _canonical_batches(conn, schema, where, json_canonical, as_schema):
        total.add(batch)
    return total


@task(name="verify", cache_policy=NO_CACHE, task_run_name="verify {plan.table} {copied.chunk.lo}..{copied.chunk.hi}", **RETRY_POLICY)
def verify_chunk(source_ref: str, dest_ref: str, plan: TablePlan, copied: ChunkResult, json_canonical: bool) -> Checksum:
    """The staging rows of one chunk against what was extracted from the source for it.

    The first comparison is the cheapest the pair allows: hashes the destination computes where the
    rows are (plan.raw_stream, plan.hashed_in_place), else the staged rows read back and hashed
    here, JSON compared as text. When that differs, both sides are read again and hashed here, with
    every JSON document in canonical form if the destination prints some differently from the
    source (`json_canonical`: key order, spacing, number format; a JSON parse per value); only a
    difference that remains is a mismatch, narrowed to the rows.
    """
    staged = plan.dest_schema.renamed(plan.staging)
    where = RowFilter(copied.chunk)
    with using(dest_ref) as (dest,):
        landed = _landed(dest, plan, staged, where)
    extracted = copied.checksum
    if landed == extracted:
        return landed
    json_canonical = json_canonical and not plan.raw_stream and any(c.type == "json" for c in staged.columns)
    with using(source_ref, dest_ref) as (source, dest):
        if json_canonical or plan.hashed_in_place:
            extracted = checksum(source, plan.source_schema, plan.row_filter(copied.chunk), json_canonical,
                                 plan.dest_schema if plan.casts else None)
            landed = checksum(dest, staged, where, json_canonical)
            if landed == extracted:
                return landed
        keys, unexamined = differing_keys(source, plan.source_schema, plan.row_filter(copied.chunk),
                                          dest, staged, where, plan.dest_schema, json_canonical)
    raise VerificationFailed(
        f"table {plan.table}: chunk {copied.chunk.label()} differs: source {extracted}, "
        f"destination {landed}; rows that differ: {describe_keys(plan.source_schema.primary_key, keys, unexamined)}")


def _landed(dest: Connector, plan: TablePlan, staged: TableSchema, where: RowFilter) -> Checksum | None:
    """The staged chunk's checksum, computed the cheapest way the pair allows; None when the engine
    could not hash the staged column types in place (verify then compares values read back)."""
    if plan.raw_stream:
        return dest.server_checksum(staged, where)
    if not plan.hashed_in_place:
        return checksum(dest, staged, where, False)
    try:
        return dest.in_place_checksum(staged, where)
    except MigrationError as exc:
        if exc.transient:
            raise
        get_run_logger().warning("Table %s: the destination could not hash the staged rows in place (%s); "
                                 "comparing values read back instead", plan.table, exc)
        return None


def describe_keys(pk: list[str], keys: list, unexamined: int = 0) -> str:
    if not keys:
        return "(none found on re-read; the source changed during the copy)"
    shown = ", ".join(map(str, keys[:MAX_REPORTED_KEYS]))
    more = f" and {len(keys) - MAX_REPORTED_KEYS} more" if len(keys) > MAX_REPORTED_KEYS else ""
    if unexamined:
        more += f"; more rows differ in {unexamined} group(s) of keys not compared row by row"
    key = f"({', '.join(pk)})" if len(pk) > 1 else pk[0] if pk else "row"
    return f"{key} {shown}{more}"


def _canonical_batches(conn: Connector, schema: TableSchema, where: RowFilter, json_canonical: bool,
                       as_schema: TableSchema | None = None) -> Iterator[pa.RecordBatch]:
    """The rows `where` selects, as hashed; with `as_schema`, converted to it first."""
    for batch in conn.read_batches(schema, where, BATCH_ROWS):
        batch = conform(batch, as_schema) if as_schema else batch
        yield for_checksum(batch, as_schema or schema, json_canonical)


def _groups(batch: pa.RecordBatch, keys: list[str]) -> np.ndarray:
    """Each row's group: a hash of its key (of the whole row without a key), so a row lands in the
    same group on both sides."""
    return (row_hashes(batch.select(keys) if keys else batch) % np.uint64(GROUPS)).astype(np.intp)


def _group_checksums(batches: Iterable[pa.RecordBatch], keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    counts, sums = np.zeros(GROUPS, np.int64), np.zeros(GROUPS, np.uint64)
    for batch in batches:
        groups = _groups(batch, keys)
        counts += np.bincount(groups, minlength=GROUPS)
        np.add.at(sums, groups, row_hashes(batch))
    return counts, sums


def _row_hashes_in(batches: Iterable[pa.RecordBatch], keys: list[str], groups: np.ndarray) -> dict:
    """For the rows of `groups`: key -> the hash of each column (a report names the columns that
    differ); without a key, row hash -> how many rows have it."""
    out: dict = {}
    for batch in batches:
        batch = batch.filter(pa.array(np.isin(_groups(batch, keys), groups)))
        if keys:
            per_column = zip(*(column_hashes(a).tolist() for a in batch.columns))
            values = [batch.column(k).to_pylist() for k in keys]
            out.update(zip(values[0] if len(keys) == 1 else zip(*values), per_column))
        else:
            for h in row_hashes(batch).tolist():
                out[h] = out.get(h, 0) + 1
    return out


def differing_keys(source: Connector, source_schema: TableSchema, source_where: RowFilter,
                   dest: Connector, dest_schema: TableSchema, dest_where: RowFilter,
                   as_schema: TableSchema, json_canonical: bool) -> tuple[list, int]:
    """Keys (or, without a key, row hashes) whose rows differ between the two sides, and how many
    differing groups of rows were not examined.

    Two passes over each side, so memory stays bounded however large the range: first a checksum
    per group of rows (grouped by key hash), then row by row only in the groups that differ, as
    many as hold at most MAX_EXAMINED_ROWS rows."""
    keys = as_schema.primary_key
    sides = ((source, source_schema, source_where), (dest, dest_schema, dest_where))

    def rows(side):
        return _canonical_batches(*side, json_canonical, as_schema)

    (count_a, sum_a), (count_b, sum_b) = (_group_checksums(rows(side), keys) for side in sides)
    differing = np.flatnonzero((count_a != count_b) | (sum_a != sum_b))
    if not differing.size:
        return [], 0
    sizes = np.maximum(count_a, count_b)[differing]
    examined = differing[:max(1, int(np.searchsorted(np.cumsum(sizes), MAX_EXAMINED_ROWS, side="right")))]
    a, b = (_row_hashes_in(rows(side), keys, examined) for side in sides)
    found = sorted((k for k in a.keys() | b.keys() if a.get(k) != b.get(k)), key=lambda k: (str(type(k)), k))
    return [_explain(k, a.get(k), b.get(k), as_schema) if keys else k for k in found], len(differing) - len(examined)


def _explain(key, left, right, schema: TableSchema) -> str:
    if left is None:
        return f"{key} (only in the destination)"
    if right is None:
        return f"{key} (missing from the destination)"
    columns = [c.name for c, x, y in zip(schema.columns, left, right) if x != y]
    return f"{key} (columns {', '.join(columns)})"


def compare_tables(source: Connector, dest: Connector, table: str, dest_table: str | None = None,
                   chunk_rows: int = 250_000) -> list[str]:
    """Verify a migrated table in place: per-chunk counts and checksums; returns mismatch descriptions."""
    from tasks.plan import key_chunks
    src_schema = source.describe(table)
    dst_schema = src_schema.renamed(dest_table or table)
    json_canonical = needs_json_canonical(source, dest)
    problems = []
    for chunk in key_chunks(source, src_schema, chunk_rows):
        a = checksum(source, src_schema, RowFilter(chunk), json_canonical)
        b = checksum(dest, dst_schema, RowFilter(chunk), json_canonical)
        if a != b:
            keys, unexamined = differing_keys(source, src_schema, RowFilter(chunk), dest, dst_schema, RowFilter(chunk),
                                              src_schema, json_canonical)
            problems.append(f"table {table}: chunk {chunk.label()}: source {a}, destination {b}; "
                            f"rows that differ: {describe_keys(src_schema.primary_key, keys, unexamined)}")
    return problems


