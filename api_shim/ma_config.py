"""The Migration Assistant's migration configuration, and how it maps onto the `migrate-tables` flow.

Database systems (mysql, postgresql, sqlite, aurora-mysql, aurora-postgres, cloud-sql, clickhouse) run the
table migration flow. Web and file systems (wordpress, static, aws-s3, ...) are recognised and validated,
then refused with a clear error: the file migration flow does not exist yet.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from connectors.endpoint import Endpoint

DATABASE_SYSTEMS = {"mysql": "mysql", "postgresql": "postgres", "sqlite": "sqlite", "aurora-mysql": "mysql",
                    "aurora-postgres": "postgres", "cloud-sql": "postgres", "clickhouse": "clickhouse"}
FILE_SYSTEMS = ["wordpress", "drupal", "django", "static", "aws-s3", "gcp-gcs", "azure-blob", "aws-ec2",
                "gcp-compute", "azure-vm"]
SYSTEM_TYPES = FILE_SYSTEMS[:4] + ["mysql", "postgresql", "sqlite", "clickhouse", "aurora-mysql", "aurora-postgres",
                                   "cloud-sql"] + FILE_SYSTEMS[4:]
TRANSFER_METHODS = ["ssh", "ftp", "rsync", "s3_sync", "gcs_sync", "azure_sync", "hybrid_sync", "docker_cp",
                    "direct_copy"]
DATABASE_TYPES = ["mysql", "postgresql", "sqlite", "clickhouse", "aurora-mysql", "aurora-postgres", "cloud-sql"]


class SystemConfig(BaseModel):
    """A source or destination system. Unknown keys are kept (paths, region, bucket...) for file systems."""
    model_config = ConfigDict(extra="allow")

    type: str
    host: str | None = None
    cluster: str | None = Field(None, description="Aurora cluster endpoint (used as the host)")
    port: int | None = Field(None, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    database: str | dict[str, Any] | None = None
    path: str | None = Field(None, description="SQLite file, or embedded ClickHouse (chDB) directory")
    engine: str | None = Field(None, description="cloud-sql only: postgresql (default) or mysql")
    tables: list[str] | None = None

    @field_validator("type")
    @classmethod
    def known_type(cls, value: str) -> str:
        if value not in SYSTEM_TYPES:
            raise ValueError(f"Invalid system type: {value!r}; one of {', '.join(SYSTEM_TYPES)}")
        return value

    @property
    def is_database(self) -> bool:
        return self.type in DATABASE_SYSTEMS

    def engine_name(self) -> str:
        if self.type == "cloud-sql" and (self.engine or "postgresql").startswith("mysql"):
            return "mysql"
        return DATABASE_SYSTEMS[self.type]

    def endpoint(self, label: str) -> Endpoint:
        engine = self.engine_name()
        if engine == "sqlite" or (engine == "clickhouse" and self.path):
            return Endpoint(engine=engine, path=self.path, label=label,
                            database=self.database if isinstance(self.database, str) else None)
        return Endpoint(engine=engine, host=self.host or self.cluster, port=self.port, user=self.username,
                        password=self.password or SecretStr(""), label=label,
                        database=self.database if isinstance(self.database, str) else None)


class TransferConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    method: str = "direct_copy"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def parallel_is_a_count(cls, value: dict[str, Any]) -> dict[str, Any]:
        parallel = value.get("parallel_transfers", 2)
        if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= 64:
            raise ValueError("parallel_transfers must be a whole number from 1 to 64")
        return value


class SafetyConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    backup_before: bool = True
    rollback_on_failure: bool = True
    verify_after: bool = True


class MigrationConfig(BaseModel):
    """The body of POST /migrations/ and POST /validate/."""
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = None
    source: SystemConfig
    destination: SystemConfig
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    tables: list[str] | None = Field(None, description="tables to move (default: every table of the source)")
    mode: str = Field("full", pattern="^(full|incremental)$")
    watermark_column: str | None = Field(None, validate_default=True)

    @field_validator("watermark_column")
    @classmethod
    def incremental_has_watermark(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("mode") == "incremental" and not value:
            raise ValueError("required with mode incremental (a column that grows when a row changes)")
        return value


def unsupported_systems(config: MigrationConfig) -> list[dict[str, str]]:
    """Validation errors for systems this server cannot migrate yet (field + message)."""
    errors = []
    for side in ("source", "destination"):
        system: SystemConfig = getattr(config, side)
        if not system.is_database:
            errors.append({"field": f"{side}.type",
                           "message": f"{system.type!r} is a file/web system; only database systems can be "
                                      f"migrated for now: {', '.join(DATABASE_TYPES)}"})
        elif system.engine_name() in ("sqlite",) and not system.path:
            errors.append({"field": f"{side}.path", "message": "sqlite needs path (the database file)"})
        elif system.engine_name() != "sqlite" and not (system.host or system.cluster or system.path):
            errors.append({"field": f"{side}.host", "message": f"{system.type} needs host"})
    return errors


def flow_parameters(config: MigrationConfig, source_ref: str, destination_ref: str) -> dict[str, Any]:
    """Parameters of `migrate-tables` for this configuration (endpoint refs are block names, never secrets)."""
    options = config.transfer.options
    return {
        "source": source_ref, "destination": destination_ref,
        "tables": config.tables or config.source.tables,
        "mode": config.mode, "watermark_column": config.watermark_column,
        "parallel": int(options.get("parallel_transfers", 2)),
        "verify": bool(config.safety.verify_after),
    }
