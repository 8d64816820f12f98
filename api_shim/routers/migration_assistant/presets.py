"""/presets, /templates and /validate: stored parameter sets for migrations, and pre-migration checks.

Built-in presets are code (api_shim.presets_catalog); templates are tenant-owned rows of the shim's store
and are listed among the presets as custom ones. Creating a migration from either makes a session through
api_shim.sessions.create_session; validation runs the real checks of api_shim.validation.
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Response
from prefect.client.orchestration import PrefectClient
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool

from api_shim import sessions
from api_shim.auth import Principal, owning_tenant, require_scopes, tenant_filter
from api_shim.errors import ApiError, not_found
from api_shim.ma_config import MigrationConfig
from api_shim.presets_catalog import (BUILT_IN, BUILT_IN_BY_ID, TemplateVariable, apply_overrides, fill_variables,
                                      literal_secrets, placeholders)
from api_shim.prefect_runs import prefect_client
from api_shim.ratelimit import limited
from api_shim.session_models import SessionCreated
from api_shim.store.db import db_session
from api_shim.store.presets_models import MigrationTemplate
from api_shim.validation import ValidationResult, validate_migration

router = APIRouter(tags=["presets"])
reader = require_scopes("presets:read")
editor = require_scopes("presets:write")
migrator = require_scopes("migrations:write")


class PresetSummary(BaseModel):
    id: str
    name: str
    description: str | None = None
    source_types: list[str]
    destination_types: list[str]
    custom: bool = False


class Preset(PresetSummary):
    config_template: dict[str, Any]
    variables: list[TemplateVariable]


class CreateFromPreset(BaseModel):
    overrides: dict[str, Any] = Field(default_factory=dict, description='dotted paths, e.g. "source.host": "db1"')
    variables: dict[str, Any] = Field(default_factory=dict, description="values for the preset's {{variables}}")


class TemplateIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    template: dict[str, Any]
    variables: list[TemplateVariable] = Field(default_factory=list)


class Template(TemplateIn):
    id: str
    tenant_id: str | None
    created_by: str
    created_at: dt.datetime


# ---- presets ---------------------------------------------------------------------------------------------

def _types(template: dict, side: str) -> list[str]:
    kind = (template.get(side) or {}).get("type")
    return [kind] if isinstance(kind, str) and kind else []


def _from_template(row: MigrationTemplate) -> Preset:
    return Preset(id=row.id, name=row.name, description=row.description, source_types=_types(row.template, "source"),
                  destination_types=_types(row.template, "destination"), custom=True,
                  config_template=row.template, variables=row.variables)


async def _templates(session: AsyncSession, who: Principal, scope: str | None) -> list[MigrationTemplate]:
    query = select(MigrationTemplate).order_by(MigrationTemplate.created_at)
    if not (who.is_admin and scope is None):
        query = query.where(MigrationTemplate.tenant_id == scope)
    return list((await session.execute(query)).scalars())


async def _template(session: AsyncSession, template_id: str, who: Principal, scope: str | None) -> MigrationTemplate:
    row = await session.get(MigrationTemplate, template_id)
    if row is None or not who.can_see(row.tenant_id) or (who.is_admin and scope and row.tenant_id != scope):
        raise not_found("template", "template_id", template_id)
    return row


async def _preset(session: AsyncSession, preset_id: str, who: Principal, scope: str | None) -> Preset:
    if preset_id in BUILT_IN_BY_ID:
        return Preset(**BUILT_IN_BY_ID[preset_id])
    try:
        return _from_template(await _template(session, preset_id, who, scope))
    except ApiError:
        raise not_found("preset", "preset_id", preset_id) from None


@router.get("/presets/", response_model=list[PresetSummary])
async def list_presets(who: Principal = Depends(reader), scope: str | None = Depends(tenant_filter),
                       session: AsyncSession = Depends(db_session)) -> list[PresetSummary]:
    """Built-in presets, then the tenant's templates (custom presets)."""
    custom = [_from_template(t) for t in await _templates(session, who, scope)]
    return [PresetSummary(**p) for p in BUILT_IN] + [PresetSummary(**p.model_dump()) for p in custom]


@router.get("/presets/{preset_id}", response_model=Preset)
async def get_preset(preset_id: str, who: Principal = Depends(reader), scope: str | None = Depends(tenant_filter),
                     session: AsyncSession = Depends(db_session)) -> Preset:
    return await _preset(session, preset_id, who, scope)


def _configuration(preset: Preset, request: CreateFromPreset) -> MigrationConfig:
    overridden = apply_overrides(preset.config_template, request.overrides)
    filled = fill_variables(overridden, preset.variables, request.variables)
    try:
        return MigrationConfig.model_validate(filled)
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()]
        raise sessions.invalid_configuration(errors) from None


@router.post("/presets/{preset_id}/create-migration", response_model=SessionCreated, status_code=201)
async def create_from_preset(preset_id: str, request: CreateFromPreset, who: Principal = Depends(migrator),
                             scope: str | None = Depends(tenant_filter), session: AsyncSession = Depends(db_session),
                             client: PrefectClient = Depends(prefect_client)) -> SessionCreated:
    """Fill the preset's variables, apply the dotted overrides, and create a session from the result."""
    preset = await _preset(session, preset_id, who, scope)
    config = _configuration(preset, request)
    run = await sessions.create_session(client, config, who, owning_tenant(who, scope), [f"preset:{preset.id}"])
    return SessionCreated(session_id=str(run.id), message=f"Migration session created from preset {preset.id}",
                          created_at=run.created or dt.datetime.now(dt.timezone.utc))


# ---- templates -------------------------------------------------------------------------------------------

def _check_template(body: TemplateIn) -> None:
    declared = {v.name for v in body.variables}
    errors = [{"field": f"template.{path}", "message": "holds a literal secret; use a {{variable}} instead"}
              for path in literal_secrets(body.template)]
    errors += [{"field": "variables", "message": f"{{{{{name}}}}} is used in the template but not declared"}
               for name in sorted(placeholders(body.template) - declared)]
    names = [v.name for v in body.variables]
    errors += [{"field": f"variables.{n}", "message": "declared more than once"} for n in sorted({n for n in names
                                                                                                if names.count(n) > 1})]
    for side in ("source", "destination"):
        if not isinstance(body.template.get(side), dict) or "type" not in body.template[side]:
            errors.append({"field": f"template.{side}.type", "message": "required"})
    if errors:
        raise ApiError(400, "INVALID_TEMPLATE", "Invalid migration template", {"validation_errors": errors})


def _template_out(row: MigrationTemplate) -> Template:
    return Template(id=row.id, tenant_id=row.tenant_id, name=row.name, description=row.description,
                    template=row.template, variables=row.variables, created_by=row.created_by,
                    created_at=row.created_at)


@router.post("/templates/", response_model=Template, status_code=201, tags=["templates"])
async def create_template(body: TemplateIn, who: Principal = Depends(editor), scope: str | None = Depends(tenant_filter),
                          session: AsyncSession = Depends(db_session)) -> Template:
    """A reusable template: a configuration with {{variable}} placeholders and the variables it declares."""
    _check_template(body)
    row = MigrationTemplate(id=f"tpl-{uuid.uuid4().hex[:12]}", tenant_id=owning_tenant(who, scope), name=body.name,
                            description=body.description, template=body.template,
                            variables=[v.model_dump() for v in body.variables], created_by=who.username)
    session.add(row)
    await session.commit()
    return _template_out(row)


@router.get("/templates/", response_model=list[Template], tags=["templates"])
async def list_templates(who: Principal = Depends(reader), scope: str | None = Depends(tenant_filter),
                         session: AsyncSession = Depends(db_session)) -> list[Template]:
    return [_template_out(t) for t in await _templates(session, who, scope)]


@router.get("/templates/{template_id}", response_model=Template, tags=["templates"])
async def get_template(template_id: str, who: Principal = Depends(reader), scope: str | None = Depends(tenant_filter),
                       session: AsyncSession = Depends(db_session)) -> Template:
    return _template_out(await _template(session, template_id, who, scope))


@router.delete("/templates/{template_id}", status_code=204, response_class=Response, tags=["templates"])
async def delete_template(template_id: str, who: Principal = Depends(editor), scope: str | None = Depends(tenant_filter),
                          session: AsyncSession = Depends(db_session)) -> Response:
    await session.delete(await _template(session, template_id, who, scope))
    await session.commit()
    return Response(status_code=204)


# ---- validation ------------------------------------------------------------------------------------------

@router.post("/validate/", response_model=ValidationResult, tags=["validation"],
             dependencies=[Depends(limited(30, 60, "validate"))])
async def validate(config: MigrationConfig, who: Principal = Depends(migrator)) -> ValidationResult:
    """Connect to both systems and run the pre-migration checks (nothing is written)."""
    return await run_in_threadpool(validate_migration, config)
