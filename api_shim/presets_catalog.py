"""Built-in presets (data only) and how a preset or template becomes a migration configuration.

A preset is a configuration with `{{variable}}` placeholders plus the variables it declares. Creating a
migration from one fills the variables, applies dotted overrides ("source.host": "db1"), and validates
the result as a MigrationConfig. Database presets run the table migration flow; the web presets of the
documented examples validate but are refused when a migration is created (no file migration flow yet).
"""
from __future__ import annotations

import copy
import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from api_shim.errors import ApiError
from api_shim.ma_config import MigrationConfig, SafetyConfig, SystemConfig, TransferConfig

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential", re.IGNORECASE)
VariableType = Literal["string", "integer", "number", "boolean", "secret"]
_PYTHON_TYPES = {"string": str, "secret": str, "integer": int, "number": (int, float), "boolean": bool}


class TemplateVariable(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)
    type: VariableType = "string"
    required: bool = False
    default: str | int | float | bool | None = None
    description: str | None = None


def _var(name: str, type_: VariableType = "string", default: Any = None, description: str | None = None) -> dict:
    return {"name": name, "type": type_, "required": default is None and type_ != "secret", "default": default,
            "description": description}


def _server(kind: str, prefix: str, port: int, user: str) -> tuple[dict, list[dict]]:
    system = {"type": kind, "host": f"{{{{{prefix}_host}}}}", "port": f"{{{{{prefix}_port}}}}",
              "username": f"{{{{{prefix}_username}}}}", "password": f"{{{{{prefix}_password}}}}",
              "database": f"{{{{{prefix}_database}}}}"}
    variables = [_var(f"{prefix}_host"), _var(f"{prefix}_port", "integer", port), _var(f"{prefix}_username", default=user),
                 _var(f"{prefix}_password", "secret", description="optional; stored in a Prefect block, never echoed"),
                 _var(f"{prefix}_database")]
    return system, variables


def _database_preset(preset_id: str, name: str, description: str, source: tuple, destination: tuple) -> dict:
    (src, src_vars), (dst, dst_vars) = source, destination
    return {"id": preset_id, "name": name, "description": description,
            "source_types": [src["type"]], "destination_types": [dst["type"]],
            "config_template": {"name": name, "source": src, "destination": dst, "mode": "full",
                                "transfer": {"method": "direct_copy", "options": {"parallel_transfers": 2}},
                                "safety": {"backup_before": True, "rollback_on_failure": True, "verify_after": True}},
            "variables": src_vars + dst_vars}


_CLICKHOUSE_EMBEDDED = ({"type": "clickhouse", "path": "{{clickhouse_path}}", "database": "{{clickhouse_database}}"},
                        [_var("clickhouse_path", description="embedded ClickHouse (chDB) folder; override "
                                                             "destination.host for a server"),
                         _var("clickhouse_database", default="default")])

BUILT_IN: list[dict] = [
    _database_preset("postgres-to-clickhouse", "PostgreSQL to ClickHouse",
                     "Copy PostgreSQL tables into ClickHouse for analytics, verified by checksums",
                     _server("postgresql", "source", 5432, "postgres"), _CLICKHOUSE_EMBEDDED),
    _database_preset("mysql-to-clickhouse", "MySQL to ClickHouse",
                     "Copy MySQL or MariaDB tables into ClickHouse for analytics",
                     _server("mysql", "source", 3306, "root"), _CLICKHOUSE_EMBEDDED),
    _database_preset("mysql-to-postgres", "MySQL to PostgreSQL",
                     "Move an application database from MySQL or MariaDB to PostgreSQL",
                     _server("mysql", "source", 3306, "root"), _server("postgresql", "destination", 5432, "postgres")),
    _database_preset("postgres-to-postgres", "PostgreSQL to PostgreSQL",
                     "Major-version upgrade or move between PostgreSQL servers",
                     _server("postgresql", "source", 5432, "postgres"),
                     _server("postgresql", "destination", 5432, "postgres")),
    {"id": "wordpress-mysql", "name": "WordPress with MySQL",
     "description": "WordPress site and its MySQL database to AWS (validates; file migrations are not available yet)",
     "source_types": ["wordpress"], "destination_types": ["aws-s3", "gcp-gcs", "azure-blob"],
     "config_template": {
         "name": "WordPress with MySQL",
         "source": {"type": "wordpress", "host": "{{source_host}}", "username": "{{source_username}}",
                    "password": "{{source_password}}",
                    "database": {"type": "mysql", "host": "{{db_host}}", "username": "{{db_username}}",
                                 "password": "{{db_password}}", "database": "{{db_name}}"}},
         "destination": {"type": "aws-s3", "region": "{{aws_region}}", "bucket": "{{s3_bucket}}",
                         "database": {"type": "aurora-mysql", "cluster": "{{aurora_cluster}}",
                                      "username": "{{aurora_username}}", "password": "{{aurora_password}}"}},
         "transfer": {"method": "hybrid_sync", "options": {"compression": True, "parallel_transfers": 4}}},
     "variables": [_var("source_host"), _var("source_username"), _var("source_password", "secret"), _var("db_host"),
                   _var("db_username"), _var("db_password", "secret"), _var("db_name"),
                   _var("aws_region", default="us-east-1"), _var("s3_bucket"), _var("aurora_cluster"),
                   _var("aurora_username"), _var("aurora_password", "secret")]},
    {"id": "django-postgres", "name": "Django with PostgreSQL",
     "description": "Django application with its PostgreSQL database to a VM (validates; file migrations are not "
                    "available yet)",
     "source_types": ["django"], "destination_types": ["aws-ec2", "gcp-compute", "azure-vm"],
     "config_template": {
         "name": "Django with PostgreSQL",
         "source": {"type": "django", "host": "{{source_host}}", "username": "{{source_username}}",
                    "database": {"type": "postgresql", "host": "{{db_host}}", "username": "{{db_username}}",
                                 "password": "{{db_password}}", "database": "{{db_name}}"}},
         "destination": {"type": "aws-ec2", "host": "{{destination_host}}", "username": "{{destination_username}}"},
         "transfer": {"method": "rsync", "options": {"compression": True}}},
     "variables": [_var("source_host"), _var("source_username"), _var("db_host"), _var("db_username"),
                   _var("db_password", "secret"), _var("db_name"), _var("destination_host"),
                   _var("destination_username")]},
]
BUILT_IN_BY_ID = {p["id"]: p for p in BUILT_IN}


# --- placeholders ---------------------------------------------------------------------------------

def placeholders(value: Any) -> set[str]:
    """Every variable name a configuration refers to."""
    if isinstance(value, dict):
        return set().union(*(placeholders(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    return set(PLACEHOLDER.findall(value)) if isinstance(value, str) else set()


def literal_secrets(value: Any, path: str = "") -> list[str]:
    """Paths of password-like keys holding a literal value instead of a placeholder (not to be stored)."""
    found = []
    for key, item in (value.items() if isinstance(value, dict) else []):
        where = f"{path}.{key}" if path else str(key)
        if isinstance(item, dict):
            found += literal_secrets(item, where)
        elif SECRET_KEY.search(str(key)) and item not in (None, "") and not PLACEHOLDER.fullmatch(str(item).strip()):
            found.append(where)
    return found


def _fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        filled = {k: _fill(v, values) for k, v in value.items()}
        return {k: v for k, v in filled.items() if v is not None}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if not isinstance(value, str):
        return value
    whole = PLACEHOLDER.fullmatch(value.strip())
    if whole:  # the value is one placeholder: keep the variable's type; unset optional ones drop the key
        return values.get(whole.group(1))
    return PLACEHOLDER.sub(lambda m: "" if values.get(m.group(1)) is None else str(values[m.group(1)]), value)


def _check_types(declared: dict[str, TemplateVariable], given: dict[str, Any]) -> None:
    bad = [{"field": f"variables.{name}", "message": f"expected {declared[name].type}"}
           for name, value in given.items() if name in declared and value is not None
           and (not isinstance(value, _PYTHON_TYPES[declared[name].type])
                or (declared[name].type in ("integer", "number") and isinstance(value, bool)))]
    unknown = [{"field": f"variables.{name}", "message": "not a variable of this preset"}
               for name in given if name not in declared]
    if bad or unknown:
        raise ApiError(400, "INVALID_VARIABLES", "Invalid template variables", {"validation_errors": bad + unknown})


def fill_variables(template: dict, variables: list[TemplateVariable], given: dict[str, Any]) -> dict:
    """The template with every placeholder replaced; 400 naming required variables left without a value."""
    declared = {v.name: v for v in variables}
    _check_types(declared, given)
    used = placeholders(template)
    values = {name: var.default for name, var in declared.items()} | {k: v for k, v in given.items() if v is not None}
    missing = sorted(n for n in used if values.get(n) is None and (n not in declared or declared[n].required))
    if missing:
        raise ApiError(400, "MISSING_VARIABLES", f"Missing template variables: {', '.join(missing)}",
                       {"missing_variables": missing,
                        "validation_errors": [{"field": f"variables.{n}", "message": "required"} for n in missing]})
    return _fill(template, values)


# --- dotted overrides -----------------------------------------------------------------------------

_MODEL_AT: dict[tuple[str, ...], type[BaseModel] | None] = {
    (): MigrationConfig, ("source",): SystemConfig, ("destination",): SystemConfig,
    ("source", "database"): SystemConfig, ("destination", "database"): SystemConfig,
    ("transfer",): TransferConfig, ("safety",): SafetyConfig, ("transfer", "options"): None}  # None: free-form


def _known(config: dict, parts: list[str]) -> bool:
    node: Any = config
    for depth, part in enumerate(parts):
        parent = tuple(parts[:depth])
        if not isinstance(node, dict):
            return False
        if part not in node:
            model = _MODEL_AT.get(parent, False)
            allowed = model is None or (model and part in model.model_fields)
            if not allowed or depth < len(parts) - 1 and tuple(parts[:depth + 1]) not in _MODEL_AT:
                return False
            node = node.setdefault(part, {}) if depth < len(parts) - 1 else None
            continue
        node = node[part]
    return True


def apply_overrides(config: dict, overrides: dict[str, Any]) -> dict:
    """`config` with each "a.b.c": value set (null removes the key); 400 naming paths that do not exist."""
    result = copy.deepcopy(config)
    unknown = [path for path in overrides if not path or not _known(result, path.split("."))]
    if unknown:
        raise ApiError(400, "UNKNOWN_OVERRIDE", f"Unknown configuration path(s): {', '.join(unknown)}",
                       {"validation_errors": [{"field": f"overrides.{p}", "message": "no such configuration path"}
                                              for p in unknown]})
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = result
        for part in parents:
            node = node[part]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return result
