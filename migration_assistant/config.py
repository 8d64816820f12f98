"""A migration described in YAML: what `migration-assistant run CONFIG.yaml` reads.

    source: sqlalchemy-connector/orders-db     # block, env:VAR, or a URL without a password
    destination: clickhouse-endpoint/warehouse
    tables: [orders, customers]                # omit for every table
    mode: incremental                          # or full
    watermark_column: updated_at
    detect_deletes: true
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.base import MigrationError


class MigrationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)
    tables: list[str] | None = None
    mode: Literal["full", "incremental"] = "full"
    watermark_column: str | None = None
    detect_deletes: bool = False
    lossy_casts: list[str] = Field(default_factory=list)
    target_prefix: str = ""
    chunk_rows: int = Field(default=250_000, gt=0)
    parallel: int = Field(default=2, ge=1, le=8)
    verify: bool = True
    destination_slots: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _incremental_needs_watermark(self):
        if self.mode == "incremental" and not self.watermark_column:
            raise ValueError("mode 'incremental' needs watermark_column")
        return self

    def flow_parameters(self) -> dict:
        return self.model_dump()


def load_config(path: str | Path) -> MigrationConfig:
    path = Path(path)
    if not path.is_file():
        raise MigrationError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MigrationError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise MigrationError(f"{path}: expected a mapping of settings (source, destination, ...), got {type(data).__name__}")
    try:
        return MigrationConfig(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise MigrationError(f"{path}: {problems}") from None
