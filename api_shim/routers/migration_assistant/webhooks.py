"""/webhooks and /analytics: notifications as Prefect automations, statistics from flow runs.

A webhook is a tenant subscription of deployments/webhooks.py: automations that fire only for runs tagged
with the tenant, and whose action runs the `ma-webhook-deliver/ma-webhook` deployment, which signs each
delivery with HMAC-SHA256 (X-Migration-Signature). The signing key is shown once, when it is created.
Analytics read the tenant's session runs and their `migration-report` artifacts; nothing is stored here.
"""
from __future__ import annotations

import datetime as dt
import secrets
import statistics
import uuid
from collections import defaultdict
from typing import Literal

from fastapi import APIRouter, Depends, Query, Response
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from pydantic import AnyHttpUrl, BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from api_shim import sessions
from api_shim.auth import Principal, owning_tenant, require_scopes, tenant_filter
from api_shim.errors import ApiError, not_found
from api_shim.prefect_runs import artifact_of_runs, prefect_client, runs_started_between, status_of, tag_value
from api_shim.sessions import human_bytes
from api_shim.settings import get_settings
from api_shim.store.models import as_utc
from deployments.webhooks import (REPORT_ARTIFACT_KEY, SIGNATURE_HEADER, TenantSubscription, apply_subscription,
                                  remove_subscription, tenant_subscriptions)

router = APIRouter(tags=["webhooks"])
reader = require_scopes("migrations:read")
writer = require_scopes("migrations:write")

# documented event -> the delivery machinery's events
EVENTS = {"migration.started": ["started"], "migration.completed": ["completed"],
          "migration.failed": ["failed", "crashed"], "migration.cancelled": ["cancelled"],
          "migration.progress": ["progress"]}
EventName = Literal["migration.started", "migration.completed", "migration.failed", "migration.cancelled",
                    "migration.progress"]
_DOCUMENTED = {ours: documented for documented, all_ours in EVENTS.items() for ours in all_ours}


class RetryPolicy(BaseModel):
    max_retries: int = Field(3, ge=0, le=4)
    retry_delay: int = Field(5, ge=0, le=600, description="seconds between attempts")


class WebhookIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    url: AnyHttpUrl = Field(description="outside development mode, private and loopback addresses are refused "
                                        "when delivering")
    events: list[EventName] = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict, description="sent with every delivery (stored encrypted)")
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    secret: str | None = Field(None, min_length=16, max_length=256,
                               description="HMAC-SHA256 signing key; generated when omitted")


class Webhook(BaseModel):
    id: str
    name: str
    tenant_id: str | None
    events: list[str]
    enabled: bool
    signature_header: str = SIGNATURE_HEADER


class WebhookCreated(Webhook):
    url: str
    created_at: dt.datetime
    secret: str = Field(description="the signing key; shown only in this response")


def _subscription(body: WebhookIn, tenant: str | None) -> TenantSubscription:
    headers = {k: v for k, v in body.headers.items()
               if not (k.lower() == "content-type" and v.split(";")[0].strip().lower() == "application/json")}
    try:
        return TenantSubscription(
            name=f"wh-{uuid.uuid4().hex[:12]}", url=str(body.url), headers=headers, tenant_id=tenant or "-",
            events=sorted({e for name in body.events for e in EVENTS[name]}), title=body.name,
            max_attempts=body.retry_policy.max_retries + 1, retry_delay_seconds=body.retry_policy.retry_delay,
            allow_private_urls=get_settings().development)  # production: no loopback/private targets (SSRF)
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, e["loc"])) or "body", "message": e["msg"].removeprefix("Value error, ")}
                  for e in exc.errors()]
        raise ApiError(400, "INVALID_WEBHOOK", "Invalid webhook", {"validation_errors": errors}) from None


def _webhook(row: dict) -> Webhook:
    events = sorted({_DOCUMENTED.get(e, e) for e in row["events"]})
    return Webhook(id=row["name"], name=row["title"] or row["name"], tenant_id=None if row["tenant_id"] == "-"
                   else row["tenant_id"], events=events, enabled=row["enabled"])


@router.post("/webhooks/", response_model=WebhookCreated, status_code=201)
async def create_webhook(body: WebhookIn, who: Principal = Depends(writer),
                         scope: str | None = Depends(tenant_filter)) -> WebhookCreated:
    """Deliveries for the tenant's runs: a Prefect automation per subscription, signed with the returned key."""
    tenant = owning_tenant(who, scope)
    sub = _subscription(body, tenant)
    key = body.secret or secrets.token_urlsafe(32)
    await run_in_threadpool(apply_subscription, sub, key)
    return WebhookCreated(id=sub.name, name=body.name, tenant_id=tenant, url=str(body.url),
                          events=sorted(set(body.events)), enabled=True,
                          created_at=dt.datetime.now(dt.timezone.utc), secret=key)


def _visible_tenant(who: Principal, scope: str | None) -> str | None:
    """The tenant whose webhooks a caller sees (None: every tenant, for Admins without X-Tenant-ID)."""
    if who.is_admin and scope is None:
        return None
    return scope or "-"


@router.get("/webhooks/", response_model=list[Webhook])
async def list_webhooks(who: Principal = Depends(reader), scope: str | None = Depends(tenant_filter)) -> list[Webhook]:
    rows = await run_in_threadpool(tenant_subscriptions, _visible_tenant(who, scope))
    return [_webhook(r) for r in rows]


@router.delete("/webhooks/{webhook_id}", status_code=204, response_class=Response)
async def delete_webhook(webhook_id: str, who: Principal = Depends(writer),
                         scope: str | None = Depends(tenant_filter)) -> Response:
    rows = await run_in_threadpool(tenant_subscriptions, _visible_tenant(who, scope))
    row = next((r for r in rows if r["name"] == webhook_id), None)
    if row is None:
        raise not_found("webhook", "webhook_id", webhook_id)
    await run_in_threadpool(remove_subscription, row["tenant_id"], webhook_id)
    return Response(status_code=204)


# ---- analytics -------------------------------------------------------------------------------------------

class Period(BaseModel):
    start: dt.datetime
    end: dt.datetime
    basis: str = "session runs that started in the period"


class Summary(BaseModel):
    total_migrations: int
    successful_migrations: int
    failed_migrations: int
    cancelled_migrations: int
    in_progress_migrations: int
    success_rate: float | None = Field(description="completed / finished (completed, failed, cancelled), percent")
    average_duration: str | None
    average_duration_seconds: float | None
    total_rows_transferred: int
    total_bytes_transferred: int
    total_data_transferred: str


class TypeFigures(BaseModel):
    count: int
    success_rate: float | None


class Trend(BaseModel):
    date: str
    migrations: int
    avg_duration: str | None
    avg_duration_seconds: float | None
    avg_transfer_rate: str | None
    avg_bytes_per_second: float | None


class Analytics(BaseModel):
    period: Period
    summary: Summary
    by_type: dict[str, TypeFigures]
    performance_trends: list[Trend]


def _duration(run: FlowRun) -> float | None:
    if run.start_time and run.end_time:
        return (run.end_time - run.start_time).total_seconds()
    return None


def human_duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"


def _success_rate(runs: list[FlowRun]) -> float | None:
    finished = [status_of(r) for r in runs if status_of(r) in sessions.FINAL]
    return round(100 * finished.count("completed") / len(finished), 1) if finished else None


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def _bucket(when: dt.datetime, group_by: str) -> str:
    utc = when.astimezone(dt.timezone.utc)
    day = dt.date(utc.year, utc.month, utc.day)  # a plain date (Prefect's datetimes may be Pendulum's)
    if group_by == "week":
        day -= dt.timedelta(days=day.weekday())
    elif group_by == "month":
        day = day.replace(day=1)
    return day.isoformat()


def _totals(reports: dict, runs: list[FlowRun]) -> tuple[int, int]:
    tables = [t for r in runs for t in (reports.get(r.id) or []) if isinstance(t, dict)]
    return sum(int(t.get("rows") or 0) for t in tables), sum(int(t.get("bytes") or 0) for t in tables)


def _trend(date: str, runs: list[FlowRun], reports: dict) -> Trend:
    durations = [d for d in map(_duration, runs) if d is not None]
    rates = [_totals(reports, [r])[1] / d for r in runs if (d := _duration(r)) and r.id in reports]
    rate = _mean(rates)
    return Trend(date=date, migrations=len(runs), avg_duration=human_duration(_mean(durations)),
                 avg_duration_seconds=_mean(durations), avg_bytes_per_second=rate,
                 avg_transfer_rate=f"{human_bytes(rate)}/s" if rate is not None else None)


def _summary(runs: list[FlowRun], reports: dict) -> Summary:
    statuses = [status_of(r) for r in runs]
    durations = [d for r in runs if status_of(r) in sessions.FINAL and (d := _duration(r)) is not None]
    rows, size = _totals(reports, runs)
    return Summary(
        total_migrations=len(runs), successful_migrations=statuses.count("completed"),
        failed_migrations=statuses.count("failed"), cancelled_migrations=statuses.count("cancelled"),
        in_progress_migrations=sum(s not in sessions.FINAL for s in statuses), success_rate=_success_rate(runs),
        average_duration=human_duration(_mean(durations)), average_duration_seconds=_mean(durations),
        total_rows_transferred=rows, total_bytes_transferred=size, total_data_transferred=human_bytes(size))


@router.get("/analytics/migrations", response_model=Analytics, tags=["analytics"])
async def migration_analytics(start_date: dt.datetime | None = None, end_date: dt.datetime | None = None,
                              group_by: Literal["day", "week", "month"] = Query("day"),
                              who: Principal = Depends(reader), scope: str | None = Depends(tenant_filter),
                              client: PrefectClient = Depends(prefect_client)) -> Analytics:
    """Counts, success rate, durations and data moved for the tenant's sessions (default: the last 30 days)."""
    end = as_utc(end_date) or dt.datetime.now(dt.timezone.utc)
    start = as_utc(start_date) or end - dt.timedelta(days=30)
    if start > end:
        raise ApiError(400, "VALIDATION_ERROR", "start_date is after end_date",
                       {"validation_errors": [{"field": "start_date", "message": "must not be after end_date"}]})
    runs = await runs_started_between(client, sessions.scope_tags(who, scope), start, end)
    reports = await artifact_of_runs(client, [r.id for r in runs if status_of(r) == "completed"], REPORT_ARTIFACT_KEY)
    by_type, by_date = defaultdict(list), defaultdict(list)
    for run in runs:
        by_type[tag_value(run, "source") or "unknown"].append(run)
        by_date[_bucket(run.start_time, group_by)].append(run)
    return Analytics(
        period=Period(start=start, end=end), summary=_summary(runs, reports),
        by_type={kind: TypeFigures(count=len(rs), success_rate=_success_rate(rs)) for kind, rs in by_type.items()},
        performance_trends=[_trend(date, rs, reports) for date, rs in sorted(by_date.items())])

