"""Validate a schema-migration script against one target before anything is applied.

`validate_script(endpoint_ref, script, rollback_script, dry_run)` is the service surface (the
contract's validate endpoint and `dryRun: true` call it); `validate` is the same as a Prefect task.
It parses both scripts with sqlglot in the target's dialect (syntax errors carry line and column),
checks that the objects they use exist, lists what they touch, classifies the risk of each
statement from the statement itself and the engine's locking (connectors/<engine>.py `ddl_locks`),
estimates the duration from real table sizes, and, with `dry_run`, proves the scripts apply:
  - transactional DDL (PostgreSQL): forward then rollback script run inside one transaction that
    is rolled back. Statements that refuse a transaction (CREATE/DROP INDEX CONCURRENTLY) run as
    their non-concurrent equivalent there: same catalog effect, checked the same way, at the price
    of a SHARE lock on that table for the (rolled-back) build, bounded by a short lock timeout.
    VACUUM and database-level statements have no transactional form and are reported as unchecked.
  - other engines (MySQL/MariaDB, ClickHouse): the affected tables' schemas are copied into a
    scratch database (CREATE TABLE .. LIKE / AS), both scripts run there, the scratch is dropped.
Nothing is left behind on the target either way.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import uuid
from dataclasses import asdict, dataclass, field

import sqlglot
from prefect import task
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from connectors.base import DdlFailed, DdlLock, MigrationError, UnsupportedType
from tasks.retry import RETRY_POLICY

RISK_LEVELS = ("Low", "Medium", "High", "Critical")
# statement kinds, each with its risk before table size is considered
KIND_RISK = {
    "create_table": "Low", "create_other": "Low", "create_index": "Low", "create_index_concurrently": "Low",
    "drop_index": "Low", "drop_index_concurrently": "Low", "add_column": "Low", "alter_other": "Low",
    "add_column_rewrite": "Medium", "add_not_null_no_default": "Medium", "set_not_null": "Medium",
    "add_constraint": "Medium", "rename": "Medium", "dml": "Medium", "command": "Medium",
    "drop_column": "High", "alter_column_type": "High", "drop_table": "High", "truncate": "High",
}
DATA_LOSS = {"drop_column": "drops column data", "drop_table": "drops a table and its data",
             "truncate": "removes every row"}
LARGE_TABLE_ROWS = 1_000_000
# throughput assumed by the duration estimate, bytes per second
INDEX_BUILD_RATE = 40 << 20
REWRITE_RATE = 25 << 20
SCAN_RATE = 200 << 20
STATEMENT_SECONDS = 0.5
_VOLATILE = {"random", "clock_timestamp", "nextval", "uuid_generate_v4", "gen_random_uuid", "timeofday", "uuid", "rand"}


@dataclass
class ScriptError:
    script: str  # "migrationScript" or "rollbackScript"
    message: str
    line: int | None = None
    column: int | None = None


@dataclass
class Finding:
    message: str
    recommendation: str = ""
    line: int | None = None


@dataclass
class Statement:
    script: str
    text: str
    line: int
    column: int
    kind: str = "command"
    tables: list[str] = field(default_factory=list)  # tables that must exist before it runs
    objects: list[str] = field(default_factory=list)  # what it touches, as the contract names them
    risk: str = "Low"
    lock: str = ""
    outside_transaction: bool = False


@dataclass
class ValidationResult:
    """What `validate_script` found. `to_contract()` gives the validate endpoint's JSON body."""

    is_valid: bool
    errors: list[ScriptError]
    warnings: list[Finding]
    estimated_duration: int  # seconds
    risk_level: str
    affected_objects: list[str]
    has_conflicts: bool
    statements: list[Statement]
    checksum: str
    dry_run: bool = False  # whether the scripts were actually run (and undone)
    target: str = ""

    def to_contract(self) -> dict:
        return {
            "isValid": self.is_valid,
            "errors": [{k: v for k, v in asdict(e).items() if v is not None} for e in self.errors],
            "warnings": [{"message": w.message, "recommendation": w.recommendation} for w in self.warnings],
            "estimatedDuration": self.estimated_duration,
            "riskLevel": self.risk_level,
            "dependencyCheck": {"hasConflicts": self.has_conflicts, "affectedObjects": self.affected_objects},
        }

    def as_dict(self) -> dict:
        return asdict(self)


def script_checksum(script: str) -> str:
    """sha256 of the script with surrounding whitespace and line-end spaces removed."""
    text = "\n".join(line.rstrip() for line in (script or "").strip().splitlines())
    return hashlib.sha256(text.encode()).hexdigest()


def max_risk(*levels: str) -> str:
    return max(levels or ("Low",), key=RISK_LEVELS.index)


def approval_required(risk_level: str, environment: str) -> bool:
    """High risk always needs an Admin's approval; Medium in production; Low never."""
    if RISK_LEVELS.index(risk_level) >= RISK_LEVELS.index("High"):
        return True
    return risk_level == "Medium" and environment.lower() in ("production", "prod")


# --- parsing ------------------------------------------------------------------------------
def _line_col(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset)


def locate(stmt: Statement, position: int | None = None, line: int | None = None,
           column: int | None = None) -> tuple[int, int]:
    """Absolute (line, column) in the script of a 1-based character `position`, or of a
    (line, column) pair, inside `stmt`."""
    if position is not None:
        line, column = _line_col(stmt.text, max(position - 1, 0))
    if line is None:
        return stmt.line, stmt.column
    column = column or 1
    return stmt.line + line - 1, (stmt.column + column - 1 if line == 1 else column)


def split_statements(script: str, dialect: str, which: str) -> tuple[list[Statement], list[ScriptError]]:
    """The script's statements in order, each with the line and column where it starts."""
    try:
        tokens = sqlglot.Dialect.get_or_raise(dialect).tokenize(script)
    except TokenError as exc:
        return [], [ScriptError(which, f"cannot read the script: {exc}")]
    out, group = [], []
    for tok in [*tokens, None]:
        if tok is None or tok.token_type == TokenType.SEMICOLON:
            if group:
                start, end = group[0].start, group[-1].end + 1
                out.append(Statement(which, script[start:end], *_line_col(script, start)))
            group = []
        else:
            group.append(tok)
    return out, []


def _names(node) -> str:
    return ".".join(p for p in (getattr(node, "db", ""), node.name) if p)


def _volatile_default(coldef: exp.ColumnDef) -> bool:
    for c in coldef.args.get("constraints") or []:
        if isinstance(c.args.get("kind"), exp.DefaultColumnConstraint):
            for node in c.args["kind"].walk():
                if isinstance(node, (exp.Uuid, exp.Rand)) or (
                        isinstance(node, (exp.Anonymous, exp.Func)) and node.name.lower() in _VOLATILE):
                    return True
    return False


def _has(coldef: exp.ColumnDef, kind) -> bool:
    return any(isinstance(c.args.get("kind"), kind) for c in coldef.args.get("constraints") or [])


def classify(stmt: Statement, tree: exp.Expression) -> None:
    """Fill in the statement's kind, the tables it needs and the objects it touches."""
    if isinstance(tree, exp.Create):
        kind = (tree.args.get("kind") or "").upper()
        if kind == "INDEX":
            table, name = tree.this.args.get("table"), tree.this.name
            stmt.kind = "create_index_concurrently" if tree.args.get("concurrently") else "create_index"
            stmt.tables = [_names(table)] if table else []
            stmt.objects = [f"{_names(table)} table", f"{name} index (new)"]
        else:
            target = tree.find(exp.Table)
            stmt.kind = "create_table" if kind == "TABLE" else "create_other"
            stmt.objects = [f"{_names(target)} {kind.lower()} (new)"] if target else []
            stmt.tables = [_names(t) for t in tree.find_all(exp.Table) if t is not target]
    elif isinstance(tree, exp.Drop):
        kind = (tree.args.get("kind") or "").upper()
        names = [_names(t) for t in tree.args.get("tables") or tree.find_all(exp.Table)]
        if kind == "INDEX":
            stmt.kind = "drop_index_concurrently" if tree.args.get("concurrently") else "drop_index"
            stmt.objects = [f"{names[0]} index (will be dropped)"] if names else []
            table = tree.args.get("cluster") or None
            stmt.tables = [_names(table)] if isinstance(table, exp.Table) else []
        else:
            stmt.kind = "drop_table" if kind == "TABLE" else "alter_other"
            stmt.objects = [f"{n} {kind.lower()} (will be dropped)" for n in names]
            stmt.tables = [] if tree.args.get("exists") else (names if kind == "TABLE" else [])
    elif isinstance(tree, exp.TruncateTable):
        stmt.kind = "truncate"
        stmt.tables = [_names(t) for t in tree.expressions]
        stmt.objects = [f"{t} table (all rows removed)" for t in stmt.tables]
    elif isinstance(tree, exp.Alter):
        table = _names(tree.this)
        stmt.tables, stmt.objects = [table], [f"{table} table"]
        kinds = [_alter_kind(a, stmt) for a in tree.args.get("actions") or []]
        if tree.args.get("not_valid"):
            kinds = ["alter_other" if k == "add_constraint" else k for k in kinds]
        stmt.kind = max(kinds or ["alter_other"], key=lambda k: RISK_LEVELS.index(KIND_RISK[k]))
    elif isinstance(tree, (exp.Insert, exp.Update, exp.Delete, exp.Merge)):
        stmt.kind = "dml"
        stmt.tables = sorted({_names(t) for t in tree.find_all(exp.Table)} -
                             {c.alias_or_name for c in tree.find_all(exp.CTE)})
        stmt.objects = [f"{t} table (rows changed)" for t in stmt.tables[:1]]
    else:
        stmt.kind = "command"


def _alter_kind(action, stmt: Statement) -> str:
    table = stmt.tables[0]
    if isinstance(action, exp.ColumnDef):
        stmt.objects.append(f"{table}.{action.name} column (new)")
        if _volatile_default(action):
            return "add_column_rewrite"
        if _has(action, exp.NotNullColumnConstraint) and not _has(action, exp.DefaultColumnConstraint):
            return "add_not_null_no_default"
        return "add_column"
    if isinstance(action, exp.AlterColumn):
        stmt.objects.append(f"{table}.{action.name} column")
        if action.args.get("dtype"):
            return "alter_column_type"
        return "set_not_null" if action.args.get("allow_null") is False else "alter_other"
    if isinstance(action, getattr(exp, "ModifyColumn", ())):
        return "alter_column_type"
    if isinstance(action, exp.Drop):
        kind = (action.args.get("kind") or "").upper()
        dropped = [t.name for t in action.args.get("tables") or []]
        stmt.objects += [f"{table}.{n} {kind.lower() or 'object'} (will be dropped)" for n in dropped]
        return {"COLUMN": "drop_column", "INDEX": "drop_index"}.get(kind, "alter_other")
    if isinstance(action, exp.AddConstraint):
        text = action.sql().upper()
        if "FOREIGN KEY" in text or "CHECK" in text:
            return "add_constraint"
        stmt.objects.append(f"{action.name or 'new'} index (new)")
        return "create_index"
    if isinstance(action, (exp.AlterRename, exp.RenameColumn)):
        return "rename"
    return "alter_other"


def analyse(script: str, dialect: str, which: str) -> tuple[list[Statement], list[ScriptError], list[Finding]]:
    statements, errors = split_statements(script, dialect, which)
    notes: list[Finding] = []
    for stmt in statements:
        try:
            tree = sqlglot.parse_one(stmt.text, read=dialect)
        except ParseError as exc:
            for e in exc.errors[:3]:
                line, col = locate(stmt, line=e.get("line"), column=e.get("col"))
                what = str(e.get("description")).split(" but got <Token")[0]
                errors.append(ScriptError(which, f"syntax error: {what} near {e.get('highlight')!r}", line, col))
            continue
        classify(stmt, tree)
        if isinstance(tree, exp.Command):
            notes.append(Finding(f"{which} line {stmt.line}: statement not understood by the SQL parser "
                                 f"({stmt.text.split()[0].upper()} ...); only the dry run can check it",
                                 "run the validation with dryRun to check it on the database", stmt.line))
    if not statements and not errors:
        errors.append(ScriptError(which, "the script holds no statement", 1, 1))
    return statements, errors, notes


# --- checks against the target ------------------------------------------------------------
def _check_references(conn, statements: list[Statement]) -> tuple[list[ScriptError], list[Finding]]:
    errors, conflicts = [], []
    created: set[str] = set()
    dropped: set[str] = set()
    for stmt in statements:
        for table in stmt.tables:
            exists = (table in created) or (table not in dropped and conn.table_exists(table))
            if not exists:
                errors.append(ScriptError(stmt.script, f"table {table!r} does not exist", stmt.line, stmt.column))
        if stmt.kind == "create_table":
            name = stmt.objects[0].split()[0] if stmt.objects else ""
            if name and conn.table_exists(name) and "IF NOT EXISTS" not in stmt.text.upper():
                conflicts.append(Finding(f"table {name} already exists", "drop it first or use IF NOT EXISTS", stmt.line))
            created.add(name)
        if stmt.kind == "drop_table":
            dropped.update(o.split()[0] for o in stmt.objects)
        for obj in stmt.objects:  # a column the script adds must not exist yet
            if obj.endswith("column (new)"):
                table, column = obj.split()[0].rsplit(".", 1)
                with contextlib.suppress(MigrationError, UnsupportedType, KeyError):
                    if table not in created and column in conn.describe(table).column_names:
                        conflicts.append(Finding(f"column {table}.{column} already exists",
                                                 "the script was perhaps applied already", stmt.line))
    return errors, conflicts


def _assess(conn, statements: list[Statement], large_rows: int) -> tuple[list[Finding], float]:
    warnings, seconds = [], 0.0
    sizes: dict[str, tuple[int, int]] = {}
    for stmt in statements:
        lock: DdlLock = conn.ddl_locks.get(stmt.kind) or DdlLock("engine default")
        stmt.lock = lock.lock
        stmt.outside_transaction = conn.runs_outside_transaction(stmt.text)
        stmt.risk = KIND_RISK[stmt.kind]
        rows = size = 0
        for table in stmt.tables:
            if table not in sizes:
                sizes[table] = conn.table_size(table) if conn.table_exists(table) else (0, 0)
            rows, size = max((rows, size), sizes[table])
        seconds += STATEMENT_SECONDS
        if stmt.kind.startswith("create_index") or (stmt.kind == "add_constraint" and lock.rewrites is False):
            seconds += size / INDEX_BUILD_RATE * (2 if stmt.kind.endswith("concurrently") else 1)
        elif lock.rewrites:
            seconds += size / REWRITE_RATE
        elif stmt.kind in ("set_not_null", "add_constraint"):
            seconds += size / SCAN_RATE
        where = f"line {stmt.line}: "
        if stmt.kind in DATA_LOSS:
            warnings.append(Finding(f"{where}{DATA_LOSS[stmt.kind]} ({', '.join(stmt.objects) or stmt.text[:60]}); "
                                    f"lock: {lock.lock}", "take a backup first; the rollback script cannot bring "
                                    "the data back", stmt.line))
        if lock.blocks_writes and rows >= large_rows:
            stmt.risk = max_risk(stmt.risk, "High" if rows >= 10 * large_rows else "Medium")
            warnings.append(Finding(f"{where}{stmt.kind.replace('_', ' ')} on {', '.join(stmt.tables)} "
                                    f"(~{rows:,} rows) takes {lock.lock}",
                                    lock.recommendation or "run it during low-traffic hours", stmt.line))
        elif lock.rewrites and rows >= large_rows:
            stmt.risk = max_risk(stmt.risk, "Medium")
            warnings.append(Finding(f"{where}{stmt.kind.replace('_', ' ')} rewrites {', '.join(stmt.tables)} "
                                    f"(~{rows:,} rows): {lock.lock}",
                                    lock.recommendation or "run it during low-traffic hours", stmt.line))
        elif stmt.kind.startswith("create_index") and rows >= large_rows:
            minutes = size / INDEX_BUILD_RATE / 60
            warnings.append(Finding(f"{where}index creation may take {max(1, math.ceil(minutes))} minute(s) on "
                                    f"large table {', '.join(stmt.tables)}", "consider running during "
                                    "low-traffic hours", stmt.line))
        elif stmt.kind not in DATA_LOSS and KIND_RISK[stmt.kind] != "Low" and stmt.kind != "command":
            warnings.append(Finding(f"{where}{stmt.kind.replace('_', ' ')}: {lock.lock}",
                                    lock.recommendation or "review the statement's effect on running clients",
                                    stmt.line))
    return warnings, seconds


def _dry_run(conn, forward: list[Statement], backward: list[Statement]) -> tuple[list[ScriptError], list[Finding]]:
    """Run both scripts where nothing stays: a rolled-back transaction, or a scratch database."""
    statements = forward + backward
    if conn.transactional_ddl:
        runnable, notes = [], []
        for stmt in statements:
            equivalent = conn.transactional_equivalent(stmt.text)
            if equivalent is None:
                notes.append(Finding(f"line {stmt.line}: {stmt.text.split()[0].upper()} cannot run in a transaction; "
                                     "the dry run did not check it", "", stmt.line))
            else:
                runnable.append((stmt, equivalent))
        try:
            conn.run_ddl([e for _, e in runnable], in_transaction=True, lock_timeout_s=2, statement_timeout_s=120,
                         rollback=True)
        except DdlFailed as exc:
            return [_located(exc, runnable[exc.index][0] if exc.index is not None else None)], notes
        return [], notes
    qualified = [s for s in statements if any("." in t for t in s.tables)]
    if qualified:
        return [], [Finding(f"line {qualified[0].line}: the dry run cannot redirect database-qualified names; "
                            "not dry-run", "name tables without their database", qualified[0].line)]
    try:
        scratch, drop = conn.scratch_database(f"_schema_dryrun_{uuid.uuid4().hex[:10]}")
    except MigrationError as exc:
        return [], [Finding(f"dry run skipped: cannot create a scratch database ({exc})",
                            "grant CREATE and DROP on databases named _schema_dryrun_* to the migration user")]
    try:
        for table in sorted({t for s in statements for t in s.tables if conn.table_exists(t)}):
            source = f"{conn.q(conn.endpoint.database or 'default')}.{conn.q(table)}"
            scratch.execute(conn.schema_copy_sql.format(new=scratch.q(table), old=source))
        try:
            scratch.run_ddl([s.text for s in statements], in_transaction=False, lock_timeout_s=5, statement_timeout_s=120)
        except DdlFailed as exc:
            return [_located(exc, statements[exc.index] if exc.index is not None else None)], []
        return [], []
    finally:
        drop()


def _located(exc: DdlFailed, stmt: Statement | None) -> ScriptError:
    if stmt is None:
        return ScriptError("migrationScript", f"dry run failed: {exc}")
    line, col = locate(stmt, position=exc.position, line=exc.line)
    return ScriptError(stmt.script, f"dry run: {exc.detail}", line, col)


def validate_with(conn, script: str, rollback_script: str | None = None, dry_run: bool = True,
                  large_table_rows: int = LARGE_TABLE_ROWS) -> ValidationResult:
    """`validate_script` on an open connector."""
    dialect = conn.sqlglot_dialect
    forward, errors, notes = analyse(script, dialect, "migrationScript")
    backward: list[Statement] = []
    if rollback_script and rollback_script.strip():
        backward, back_errors, back_notes = analyse(rollback_script, dialect, "rollbackScript")
        errors += back_errors
        notes += back_notes
    else:
        notes.append(Finding("no rollback script", "write one: automatic rollback needs it"))
    conflicts: list[Finding] = []
    if not errors:
        ref_errors, conflicts = _check_references(conn, forward)
        errors += ref_errors
    warnings, seconds = _assess(conn, forward, large_table_rows)
    ran = False
    if dry_run and not errors:
        dry_errors, dry_notes = _dry_run(conn, forward, backward)
        errors += dry_errors
        notes += dry_notes
        ran = not dry_errors
    affected = list(dict.fromkeys(o for s in forward for o in s.objects))
    return ValidationResult(
        is_valid=not errors, errors=errors, warnings=warnings + conflicts + notes,
        estimated_duration=max(1, math.ceil(seconds)), risk_level=max_risk(*(s.risk for s in forward)),
        affected_objects=affected, has_conflicts=bool(conflicts), statements=forward + backward,
        checksum=script_checksum(script), dry_run=ran, target=conn.endpoint.label)


def validate_script(endpoint_ref: str, script: str, rollback_script: str | None = None, dry_run: bool = True,
                    large_table_rows: int = LARGE_TABLE_ROWS) -> ValidationResult:
    """Validate `script` (and its rollback) against the database named by `endpoint_ref` (a block
    `<type>/<name>`, `env:VAR`, or a password-free URL). Never changes the target. Connection
    errors raise MigrationError (ConnectionFailed); script problems are in `.errors`."""
    from tasks.connections import using
    with using(endpoint_ref) as (conn,):
        return validate_with(conn, script, rollback_script, dry_run, large_table_rows)


@task(name="validate", persist_result=True, task_run_name="validate [{phase}]", **RETRY_POLICY)
def validate(endpoint_ref: str, script: str, rollback_script: str | None, dry_run: bool, phase: str,
             large_table_rows: int = LARGE_TABLE_ROWS) -> ValidationResult:
    return validate_script(endpoint_ref, script, rollback_script, dry_run, large_table_rows)
