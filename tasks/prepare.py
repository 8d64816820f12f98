"""connect-test and planning: both endpoints answer, the tables exist, every column has a home."""
from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors.base import MigrationError, RowFilter, TableNotFound, TableSchema
from connectors.canonical import arrow_schema
from tasks import state
from tasks.connections import using
from tasks.plan import TablePlan, bytewise_key, check_compatible, destination_schema, key_chunks, work_table_name
from tasks.retry import RETRY_POLICY


@task(name="connect-test", cache_policy=NO_CACHE, **RETRY_POLICY)
def connect_test(source_ref: str, dest_ref: str, tables: list[str] | None) -> list[str]:
    """Both endpoints reachable with enough privileges; returns the source tables to migrate."""
    with using(source_ref) as (source,):
        source.check_access(write=False)
        available = [t for t in source.list_tables() if t != state.LEDGER]
    with using(dest_ref) as (dest,):
        dest.check_access(write=True)
    if not tables:
        if not available:
            raise MigrationError(f"{source_ref}: no tables to migrate")
        return available
    missing = [t for t in tables if t not in available]
    if missing:
        raise TableNotFound(f"{source_ref}: table(s) {', '.join(map(repr, missing))} not found; "
                            f"available: {', '.join(available[:20]) or '(none)'}")
    return list(tables)


@task(name="plan", cache_policy=NO_CACHE, **RETRY_POLICY)
def plan_table(source_ref: str, dest_ref: str, table: str, target: str, run_id: str, mode: str,
               watermark: str | None, casts: list[str], chunk_rows: int) -> TablePlan:
    with using(source_ref, dest_ref) as (source, dest):
        schema = source.describe(table)
        dest_schema, applied = destination_schema(schema, dest, casts)
        existing = dest.describe(target) if dest.table_exists(target) else None
        if existing:
            check_compatible(schema, existing, target)
        plan = TablePlan(
            table=table, target=target, source_schema=schema, staging=work_table_name(target, "stage", run_id),
            dest_schema=dest_schema, backup=work_table_name(target, "backup", run_id), mode=mode,
            target_existed=existing is not None, casts=applied, watermark=watermark)
        plan.dest_schema = plan.dest_schema.renamed(plan.staging)
        plan.hashed_in_place = dest.hashes_in_place(plan.dest_schema, existing)
        if watermark:
            _check_watermark(schema, watermark, table)
            plan.watermark_upto = source.max_value(table, watermark)
            if mode == "incremental" and plan.target_existed:
                plan.watermark_after = state.last_watermark(dest, target, watermark)
        if mode == "incremental" and plan.target_existed and not schema.primary_key:
            raise MigrationError(f"table {table!r} has no primary key; incremental mode upserts by primary key")
        plan.chunks = key_chunks(source, schema, chunk_rows, bytewise_key(source, dest, schema, dest_schema, existing))
        return plan


def _check_watermark(schema, watermark: str, table: str) -> None:
    if watermark not in schema.column_names:
        raise MigrationError(f"table {table!r} has no watermark column {watermark!r}; columns: {', '.join(schema.column_names)}")


@task(name="create-staging", cache_policy=NO_CACHE, **RETRY_POLICY)
def create_staging(source_ref: str, dest_ref: str, plan: TablePlan) -> bool:
    """Create the staging table; returns whether rows can move into it as raw COPY data (plan.raw_stream)."""
    with using(source_ref, dest_ref) as (source, dest):
        dest.drop_table(plan.staging)
        if plan.target_existed:
            dest.create_table_like(plan.target, plan.staging)
        else:
            dest.create_table(plan.dest_schema, with_key=not dest.defer_primary_key)
        can_stream = getattr(dest, "can_stream_from", None)
        return bool(can_stream and not plan.casts and can_stream(source, plan.table, plan.staging))


@task(name="index-staging", cache_policy=NO_CACHE, **RETRY_POLICY)
def index_staging(dest_ref: str, plan: TablePlan) -> None:
    """Add the primary key that loading went without (engines where that is faster)."""
    with using(dest_ref) as (dest,):
        if dest.defer_primary_key and not plan.target_existed and plan.source_schema.primary_key:
            dest.add_primary_key(plan.staging, plan.source_schema.primary_key)


@task(name="find-deleted", cache_policy=NO_CACHE, **RETRY_POLICY)
def find_deleted(source_ref: str, dest_ref: str, plan: TablePlan, run_id: str) -> tuple[str | None, int]:
    """Primary keys (every key column) present in the destination but gone from the source, written
    to a work table. Keys are read and compared as Arrow data."""
    keys = plan.source_schema.primary_key
    schema = TableSchema(work_table_name(plan.target, "deleted", run_id),
                         tuple(replace(plan.dest_schema.column(k), nullable=False) for k in keys), keys)
    with using(source_ref, dest_ref) as (source, dest):
        present = _read_keys(dest, schema.renamed(plan.target), schema)
        in_source = _read_keys(source, _key_schema(plan.source_schema), schema)
        gone = _not_in(present, in_source).combine_chunks()
        if not gone.num_rows:
            return None, 0
        dest.drop_table(schema.name)
        dest.create_table(schema)
        dest.write_batches(schema, gone.to_batches())
        return schema.name, gone.num_rows


def _not_in(present: pa.Table, in_source: pa.Table) -> pa.Table:
    """Rows of `present` whose key `in_source` lacks. A single key column goes through is_in:
    Table.join, which composite keys need (is_in takes no struct), imports pandas (50 MB)."""
    if present.num_columns == 1:
        return present.filter(pc.invert(pc.is_in(present.column(0), value_set=in_source.column(0).combine_chunks())))
    return present.join(in_source, keys=present.column_names, join_type="left anti")


def _key_schema(schema: TableSchema) -> TableSchema:
    return TableSchema(schema.name, tuple(schema.column(k) for k in schema.primary_key), schema.primary_key)


def _read_keys(conn, schema: TableSchema, as_schema: TableSchema) -> pa.Table:
    """Every key of `schema`'s table, in `as_schema`'s Arrow types (so both sides' keys compare)."""
    target = arrow_schema(as_schema)
    batches = [pa.RecordBatch.from_arrays([b.column(i).cast(f.type) for i, f in enumerate(target)], schema=target)
               for b in conn.read_batches(schema, RowFilter())]
    return pa.Table.from_batches(batches, schema=target)
