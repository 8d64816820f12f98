"""Pre-migration checks that touch the real systems (POST /validate/): the same connectors and
planner the migration flow uses, run without writing anything.

Checks, in order: supported systems; per endpoint connectivity and credentials; destination
privileges (may it create tables); the tables exist on the source; type compatibility (the planner's
type mapping, which refuses lossy conversions naming the column); size (rows and bytes from the
source's catalog). The duration estimate divides the rows by throughput measured on this project's
reference machine (README "Performance", `make bench`) and adds the measured start-up of a
deployment run (README "How long a deployment run takes"). Messages never hold a password.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, Field

import connectors
from api_shim.ma_config import MigrationConfig, SystemConfig, unsupported_systems
from connectors.base import ConnectionFailed, Connector, MigrationError
from connectors.endpoint import Endpoint
from tasks.plan import check_compatible, destination_schema
from tasks.state import LEDGER

CheckStatus = Literal["passed", "failed", "warning", "skipped"]
AUTH_FAILURE = re.compile(r"password authentication failed|access denied|authentication failed|"
                          r"no password supplied|AUTHENTICATION_FAILED|wrong password", re.IGNORECASE)
EXACT_COUNT_BELOW = 1_000_000  # catalog estimates under this are replaced by count(*)
LARGE_TABLE_ROWS = 50_000_000

# rows/s of `migrate-tables` with verification on (default) and off, per engine pair: README
# "Performance", measured by `make bench` (bench/ours.py) at commit 140a0f0 on the 2-core reference
# machine; MySQL->PG has a second, faster run at aa02864 (1M rows in 14.29 s with verify, 9.27 s without).
MEASURED_ROWS_PER_S: dict[tuple[str, str], dict[bool, tuple[float, float]]] = {
    ("postgres", "postgres"): {True: (74_890, 74_890), False: (108_786, 108_786)},
    ("postgres", "clickhouse"): {True: (194_142, 194_142), False: (240_095, 240_095)},
    ("mysql", "postgres"): {True: (36_573, 69_979), False: (61_567, 107_875)},
}
STARTUP_SECONDS = (12, 16)  # run created -> flow body starts, on a process worker polling every 2 s



class CheckResult(BaseModel):
    check: str
    status: CheckStatus
    message: str
    field: str | None = Field(None, description="the configuration field the check is about")


class TableSize(BaseModel):
    table: str
    rows: int
    rows_exact: bool = Field(description="count(*) (true) or the catalog's estimate (false)")
    bytes: int | None = Field(None, description="size on disk per the source's catalog, when it tells")


class SizeEstimate(BaseModel):
    tables: list[TableSize]
    total_rows: int
    total_bytes: int | None


class ValidationResult(BaseModel):
    valid: bool
    checks_performed: int
    checks_passed: int
    checks_failed: int
    warnings: list[str]
    errors: list[str]
    can_proceed: bool
    estimated_duration: str | None = Field(None, description="from the size and measured throughput")
    estimate_basis: str | None = Field(None, description="the figures the estimate was computed from")
    size: SizeEstimate | None = None
    checks: list[CheckResult]


@dataclass
class Checks:
    results: list[CheckResult] = field(default_factory=list)
    redact: list[Endpoint] = field(default_factory=list)

    def add(self, check: str, status: CheckStatus, message: str, field_: str | None = None) -> None:
        for endpoint in self.redact:
            message = endpoint.redact(message)
        self.results.append(CheckResult(check=check, status=status, message=message, field=field_))

    def ok(self, check: str, message: str) -> None:
        self.add(check, "passed", message)

    def fail(self, check: str, message: str, field_: str | None = None) -> None:
        self.add(check, "failed", message, field_)

    @property
    def failed(self) -> bool:
        return any(r.status == "failed" for r in self.results)


def validate_migration(config: MigrationConfig) -> ValidationResult:
    """Run every check (blocking: call it from a worker thread)."""
    checks = Checks()
    for problem in unsupported_systems(config):
        checks.fail("supported_system", problem["message"], problem["field"])
    size = None
    if not checks.failed:
        checks.ok("supported_system", f"{config.source.type} to {config.destination.type} runs the table migration flow")
        source_ep, dest_ep = _endpoint(config.source, "source"), _endpoint(config.destination, "destination")
        checks.redact += [source_ep, dest_ep]
        try:
            size = _check_endpoints(config, source_ep, dest_ep, checks)
        finally:
            connectors.release_embedded()  # chDB locks its folder per process: let the flow's worker open it
    return _result(config, checks, size)


def _endpoint(system: SystemConfig, side: str) -> Endpoint:
    endpoint = system.endpoint(side)
    endpoint.label = f"{side} ({endpoint.describe()})"
    return endpoint


def _check_endpoints(config: MigrationConfig, source_ep: Endpoint, dest_ep: Endpoint, checks: Checks) -> SizeEstimate | None:
    with _connected(source_ep, "source", checks) as source, _connected(dest_ep, "destination", checks) as dest:
        if dest is not None:
            _check_privileges(dest, checks)
        if source is None:
            return None
        tables = _check_tables(config, source, checks)
        if dest is not None and tables:
            _check_types(config, source, dest, tables, checks)
        return _check_size(source, tables, checks) if tables else None


@contextlib.contextmanager
def _connected(endpoint: Endpoint, side: str, checks: Checks) -> Iterator[Connector | None]:
    conn, ready = None, False
    try:
        _check_embedded_path(endpoint, side)
        conn = connectors.connect(endpoint)
        conn.check_access(write=False)
        checks.ok(f"{side}_connectivity", f"{endpoint.label} answered")
        checks.ok(f"{side}_credentials", f"{endpoint.label} accepted the credentials")
        ready = True
    except Exception as exc:  # drivers raise their own errors for odd input; report them, redacted
        _connect_failed(str(exc) if isinstance(exc, MigrationError) else f"{endpoint.label}: {exc}", side, checks)
    try:
        yield conn if ready else None
    finally:
        with contextlib.suppress(Exception):
            conn and conn.close()


def _check_embedded_path(endpoint: Endpoint, side: str) -> None:
    """A source file must exist; a destination is created only inside a folder that exists."""
    if not endpoint.path or endpoint.path == ":memory:":
        return
    must_exist = Path(endpoint.path) if side == "source" else Path(endpoint.path).parent
    if not must_exist.exists():
        raise ConnectionFailed(f"{endpoint.label}: {must_exist} does not exist")


def _connect_failed(message: str, side: str, checks: Checks) -> None:
    if AUTH_FAILURE.search(message):
        checks.ok(f"{side}_connectivity", f"{side}: the server answered")
        checks.fail(f"{side}_credentials", message, f"{side}.password")
    else:
        checks.fail(f"{side}_connectivity", message, f"{side}.host")
        checks.add(f"{side}_credentials", "skipped", f"{side}: not reachable, credentials not tried")


def _check_privileges(dest: Connector, checks: Checks) -> None:
    try:
        dest.check_access(write=True)
        checks.ok("destination_privileges", f"{dest.endpoint.label} lets this user create tables")
    except MigrationError as exc:
        checks.fail("destination_privileges", str(exc), "destination.username")


def _check_tables(config: MigrationConfig, source: Connector, checks: Checks) -> list[str]:
    try:
        available = [t for t in source.list_tables() if t != LEDGER]
    except MigrationError as exc:
        checks.fail("source_tables", str(exc), "tables")
        return []
    wanted = config.tables or config.source.tables or available
    missing = [t for t in wanted if t not in available]
    if missing:
        checks.fail("source_tables", f"{source.endpoint.label}: table(s) {', '.join(map(repr, missing))} not found; "
                                     f"available: {', '.join(available[:20]) or '(none)'}", "tables")
    elif not wanted:
        checks.fail("source_tables", f"{source.endpoint.label}: no tables to migrate", "tables")
    else:
        checks.ok("source_tables", f"{len(wanted)} table(s) found: {', '.join(wanted[:20])}")
    return [t for t in wanted if t in available]


def _check_types(config: MigrationConfig, source: Connector, dest: Connector, tables: list[str], checks: Checks) -> None:
    casts = list((config.model_extra or {}).get("lossy_casts") or [])
    problems, single_chunk = [], []
    for table in tables:
        try:
            schema = source.describe(table)
            destination_schema(schema, dest, casts)
            if dest.table_exists(table):
                check_compatible(schema, dest.describe(table), table)
            if schema.chunk_key is None:
                single_chunk.append(table)
        except MigrationError as exc:
            problems.append(f"table {table!r}: {exc}")
    if problems:
        checks.fail("type_compatibility", "; ".join(problems), "tables")
    else:
        checks.ok("type_compatibility", f"every column of {len(tables)} table(s) has an exact destination type")
    if single_chunk:
        checks.add("chunking", "warning", f"primary key not led by an integer column, copied as one chunk without parallelism: "
                                          f"{', '.join(single_chunk)}")


def _check_size(source: Connector, tables: list[str], checks: Checks) -> SizeEstimate | None:
    try:
        sizes = [_table_size(source, t) for t in tables]
    except MigrationError as exc:
        checks.fail("size_estimate", str(exc), "tables")
        return None
    known = [s.bytes for s in sizes if s.bytes is not None]
    estimate = SizeEstimate(tables=sizes, total_rows=sum(s.rows for s in sizes),
                            total_bytes=sum(known) if known else None)
    checks.ok("size_estimate", f"{estimate.total_rows:,} rows" +
              (f", {human_bytes(estimate.total_bytes)}" if estimate.total_bytes is not None else "") +
              f" in {len(sizes)} table(s)")
    large = [s.table for s in sizes if s.rows >= LARGE_TABLE_ROWS]
    if large:
        checks.add("large_tables", "warning", f"large table(s), expect a long run: {', '.join(large)}")
    return estimate


def _table_size(conn: Connector, table: str) -> TableSize:
    estimate, size = conn.table_size(table)
    exact = estimate < EXACT_COUNT_BELOW
    return TableSize(table=table, rows=conn.count_rows(table) if exact else estimate, rows_exact=exact, bytes=size)


def _result(config: MigrationConfig, checks: Checks, size: SizeEstimate | None) -> ValidationResult:
    results = checks.results
    failed = [r for r in results if r.status == "failed"]
    duration, basis = estimate_duration(config, size) if size and not failed else (None, None)
    return ValidationResult(
        valid=not failed, checks_performed=sum(r.status != "skipped" for r in results),
        checks_passed=sum(r.status == "passed" for r in results), checks_failed=len(failed),
        warnings=[r.message for r in results if r.status == "warning"],
        errors=[f"{r.field}: {r.message}" if r.field else r.message for r in failed],
        can_proceed=not failed, estimated_duration=duration, estimate_basis=basis, size=size, checks=results)


def estimate_duration(config: MigrationConfig, size: SizeEstimate) -> tuple[str, str]:
    pair = (config.source.engine_name(), config.destination.engine_name())
    verify = config.safety.verify_after
    if pair in MEASURED_ROWS_PER_S:
        slow, fast = MEASURED_ROWS_PER_S[pair][verify]
        where = f"measured {'->'.join(pair)}"
    else:  # not measured: assume the slowest pair we measured
        slow = fast = min(r[verify][0] for r in MEASURED_ROWS_PER_S.values())
        where = f"{'->'.join(pair)} not measured; slowest measured pair assumed"
    low = STARTUP_SECONDS[0] + size.total_rows / fast
    high = STARTUP_SECONDS[1] + size.total_rows / slow
    basis = (f"{size.total_rows:,} rows at {fast:,.0f}-{slow:,.0f} rows/s ({where}, verify "
             f"{'on' if verify else 'off'}; README Performance) plus {STARTUP_SECONDS[0]}-{STARTUP_SECONDS[1]} s "
             f"run start-up")
    return human_range(low, high), basis


def human_range(low: float, high: float) -> str:
    for unit, seconds in (("hours", 3600), ("minutes", 60)):
        if high >= 2 * seconds:
            return f"{max(1, round(low / seconds))}-{max(1, round(high / seconds))} {unit}"
    return f"{round(low)}-{round(high)} seconds"


def human_bytes(size: int) -> str:
    value, unit = float(size), "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            break
        value /= 1024
    return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
