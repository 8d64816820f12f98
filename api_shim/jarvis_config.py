"""Jarvis migration configs: source/destination settings onto endpoints and `migrate-tables` parameters,
the schedule's time zone (IST when none is given), and a flow run's report in the Jarvis result shape.

Types the engine migrates: postgresql, mysql (MariaDB), clickhouse (a server by host, or embedded chDB by
path) and sqlite (by path). Zoho and SQL Server have no connector yet and are refused with 422.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import Path
from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, SecretStr

from api_shim.errors import ApiError
from api_shim.store.models import as_utc
from connectors.endpoint import Endpoint

IST = ZoneInfo("Asia/Kolkata")
MASK = "********"
ENGINES = {"postgresql": "postgres", "postgres": "postgres", "mysql": "mysql", "mariadb": "mysql",
           "clickhouse": "clickhouse", "sqlite": "sqlite"}
SUPPORTED_TYPES = ["postgresql", "mysql", "clickhouse", "sqlite"]
NOT_BUILT = {"zoho": "Zoho CRM", "sqlserver": "SQL Server", "mssql": "SQL Server"}
DEPLOYMENT = "migrate-tables/on-demand"
DEFAULT_WATERMARK = "updated_at"
UtcTime = Annotated[dt.datetime, AfterValidator(as_utc)]  # the store's SQLite gives times back without a zone
ROW_ID = Annotated[int, Path(ge=1, le=2**31 - 1, description="the id the create call returned")]
# how long a synchronous call (POST /migrate, execute) waits for its flow run
WAIT_SECONDS = float(os.environ.get("MA_JARVIS_WAIT_SECONDS", "600"))


class ConnectionSettings(BaseModel):
    """Where one side connects. Keys other engines' configs carry (e.g. Zoho's tokens) are ignored."""
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    host: str | None = Field(None, max_length=255)
    port: int | None = Field(None, ge=1, le=65535)
    database: str | None = Field(None, max_length=255)
    username: str | None = Field(None, max_length=255, validation_alias=AliasChoices("username", "user"))
    password: SecretStr | None = Field(None, max_length=1000)
    path: str | None = Field(None, max_length=1000,
                             description="sqlite: the database file; clickhouse: an embedded chDB folder")
    secure: bool = False

    def masked(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True)
        if self.password is not None:
            data["password"] = MASK
        return data


class JarvisConfig(BaseModel):
    """The body of POST /migrate and the `config_data` of an operation."""
    model_config = ConfigDict(extra="ignore")

    source_type: str = Field(max_length=40, description=f"one of {', '.join(SUPPORTED_TYPES)}")
    dest_type: str = Field(max_length=40, description=f"one of {', '.join(SUPPORTED_TYPES)}")
    source: ConnectionSettings
    destination: ConnectionSettings
    operation_type: Literal["full", "incremental"] = "full"
    last_sync_time: dt.datetime | None = Field(
        None, description="accepted; incremental runs continue from the watermark committed in the destination")
    tables: list[str] | None = Field(None, description="tables to migrate (default: every table of the source)")
    watermark_column: str | None = Field(None, max_length=200,
                                         description=f"incremental: the column that grows on change "
                                                     f"(default {DEFAULT_WATERMARK})")

    def masked(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True, exclude={"source", "destination"})
        return {**data, "source": self.source.masked(), "destination": self.destination.masked()}


def engine_of(kind: str, field: str) -> str:
    """The connector engine for a Jarvis type, or 422 naming the supported types."""
    engine = ENGINES.get((kind or "").strip().lower())
    if engine is not None:
        return engine
    known = NOT_BUILT.get((kind or "").strip().lower())
    reason = f"{known} has no connector yet" if known else "unknown type"
    raise ApiError(422, "UNSUPPORTED_TYPE", f"{field} {kind!r} is not supported ({reason}); "
                                            f"supported types: {', '.join(SUPPORTED_TYPES)}",
                   {"field": field, "value": kind, "supported_types": SUPPORTED_TYPES})


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "VALIDATION_ERROR", "Request validation failed",
                    {"validation_errors": [{"field": field, "message": message}]})


def endpoint_for(settings: ConnectionSettings, kind: str, side: str) -> Endpoint:
    """The endpoint these settings describe; 400 naming the missing field."""
    engine = engine_of(kind, f"{side}_type" if side == "source" else "dest_type")
    label = f"{side} ({kind})"
    if engine == "sqlite" or (engine == "clickhouse" and settings.path):
        path = settings.path or (settings.database if engine == "sqlite" else None)
        if not path:
            raise _invalid(f"{side}.path", "sqlite needs path (the database file)")
        database = settings.database if engine == "clickhouse" else None
        return Endpoint(engine=engine, path=path, database=database, label=label)
    if not settings.host:
        raise _invalid(f"{side}.host", f"{kind} needs host" + (" (or path for embedded chDB)"
                                                              if engine == "clickhouse" else ""))
    if engine in ("postgres", "mysql") and not settings.database:
        raise _invalid(f"{side}.database", f"{kind} needs database")
    return Endpoint(engine=engine, host=settings.host, port=settings.port, user=settings.username,
                    password=settings.password or SecretStr(""), database=settings.database,
                    secure=settings.secure, label=label)


def endpoints_for(config: JarvisConfig) -> tuple[Endpoint, Endpoint]:
    return (endpoint_for(config.source, config.source_type, "source"),
            endpoint_for(config.destination, config.dest_type, "destination"))


def flow_parameters(config: JarvisConfig, source_ref: str, destination_ref: str) -> dict[str, Any]:
    """`migrate-tables` parameters: endpoints by block reference, never a password."""
    incremental = config.operation_type == "incremental"
    return {"source": source_ref, "destination": destination_ref, "tables": config.tables,
            "mode": config.operation_type, "verify": True,
            "watermark_column": (config.watermark_column or DEFAULT_WATERMARK) if incremental else None}


def parse_schedule(text: str | None) -> dt.datetime | None:
    """An ISO time; one without a time zone is IST. Returned in UTC."""
    if text is None or not str(text).strip():
        return None
    try:
        when = dt.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise _invalid("schedule", "expected an ISO 8601 time such as 2024-01-15T10:30:00 (IST) "
                                   "or 2024-01-15T05:00:00Z") from None
    if not 1970 <= when.year <= 2998:
        raise _invalid("schedule", "the year must be between 1970 and 2998")
    if when.tzinfo is None:
        when = when.replace(tzinfo=IST)
    return when.astimezone(dt.timezone.utc)


def in_ist(when: dt.datetime | None) -> str | None:
    return as_utc(when).astimezone(IST).isoformat() if when is not None else None


class TableCount(BaseModel):
    table: str
    records: int


class TableFailure(BaseModel):
    table: str
    error: str


class JarvisResult(BaseModel):
    """What a migration did, in the universal migration service's shape."""
    success: bool
    tables_migrated: list[TableCount] = Field(default_factory=list)
    tables_failed: list[TableFailure] = Field(default_factory=list)
    total_tables: int = 0
    errors: list[str] = Field(default_factory=list)
    flow_run_id: str | None = None


def result_of(completed: bool, report: Any, error: str | None, run_id: str, tables: list[str] | None) -> JarvisResult:
    """The result of a final run from its `migration-report` artifact (or its error)."""
    if isinstance(report, str):
        report = json.loads(report)
    if completed:
        migrated = [TableCount(table=r["table"], records=int(r.get("rows", 0))) for r in report or []]
        return JarvisResult(success=True, tables_migrated=migrated, total_tables=len(migrated),
                               flow_run_id=run_id)
    message = error or "the migration failed"
    failed = [TableFailure(table=t, error=message) for t in tables or []]
    return JarvisResult(success=False, tables_failed=failed, total_tables=len(failed), errors=[message],
                           flow_run_id=run_id)
