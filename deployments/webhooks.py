"""Webhook subscriptions (deployments/webhooks*.yaml) as Prefect automations, with signed deliveries.

A subscription file declares who hears about which runs::

    webhooks:
      - name: ops-channel                       # [a-z0-9-], unique in the file
        url: https://hooks.example.com/migrations
        events: [completed, failed, crashed]    # started, completed, failed, cancelled, crashed, progress
        secret: env:OPS_WEBHOOK_SECRET          # optional HMAC key: env:VAR or secret/NAME (a Secret block)
        flows: [migrate-tables]                 # optional; default: every flow but our delivery flow
        headers: {Authorization: env:OPS_TOKEN} # optional static headers; values literal, env:VAR or secret/NAME
        progress_every_seconds: 60              # with `progress`: at most one progress POST per run per window

`apply_webhooks(path)` makes Prefect match the file, idempotently, and touches only objects
it owns (everything is named with the `ma-webhook` prefix):

- automation `ma-webhook/<name>` (flow-run state events) and, with `progress`,
  `ma-webhook/<name>/progress` (progress-artifact updates, throttled per run);
- Webhook block `webhook/ma-webhook-<name>`: the URL and static headers, stored encrypted
  (SecretStr / SecretDict; the API shows them masked);
- Secret block `secret/ma-webhook-<name>`: the HMAC key when the file says `env:VAR` (read from
  the environment of whoever runs `apply`). A `secret/NAME` reference is used where it is and
  never copied or deleted;
- deployment `ma-webhook-deliver/ma-webhook` on the project's work pool, which does the POST.

Applying twice changes nothing; an entry removed from the file loses its automation(s) and
blocks; a changed entry is updated in place (same automation id).

Design decision: why deliveries run a deployment and not the CallWebhook action
-------------------------------------------------------------------------------
`CallWebhook` sends the Webhook block's *static* headers and a Jinja-rendered body. An HMAC of
the body has to be computed per request, and Prefect's sandboxed automation templates have no
hashing filter; the only way to put a key into the template would be to write it into the
automation itself, where `GET /automations` returns it in clear. Request signing for webhook
blocks is an open enhancement (PrefectHQ/prefect#17381). So each automation uses the
Prefect-native `RunDeployment` action instead: it starts the small flow `ma-webhook-deliver`
(in this module) with *non-secret* parameters (subscription name, block names, the event's id,
name, time and resource labels). The flow, running on a worker, reads the run, its flow and
deployment and its `migration-report` artifact from the API, builds the JSON body, loads the
key from the Secret block, signs the exact body bytes and POSTs through the Webhook block's
URL and headers. Side benefits: retries with back-off when the receiver is down, every
delivery is a visible flow run with logs, and the body can carry the run's summary, which a
CallWebhook template cannot reach. The price is latency: worker poll interval plus a cold
process start (about 10-25 s after the event; `PREFECT_WORKER_QUERY_SECONDS` sets the poll).

What the receiver gets
----------------------
`POST <url>` with `Content-Type: application/json`, the static headers, and::

    X-Migration-Event: completed
    X-Migration-Delivery: <event id>            # same on every retry of one event: dedupe on it
    X-Migration-Timestamp: 1790000000           # unix seconds; equals body["sent_at"]
    X-Migration-Signature: sha256=<hex>         # only with a secret: HMAC-SHA256(key, raw body bytes)

Body (keys always present, null when unknown)::

    {"version": 1, "subscription": "ops-channel", "event": "completed",
     "event_id": "...", "prefect_event": "prefect.flow-run.Completed", "occurred": "2026-...Z",
     "flow_run_id": "...", "flow_run_name": "...", "flow_name": "migrate-tables",
     "deployment_name": "on-demand", "tags": ["migration"],
     "state": {"name": "Completed", "type": "COMPLETED", "message": "..."},
     "parameters": {...},           # keys like password/secret/token/api_key/credential dropped,
                                    # passwords in URL user-info replaced by ***
     "summary": {"rows": 10, "verdict": "verified", "tables": [{"table": ..., "rows": ..., ...}]},
                                    # from the run's `migration-report` artifact; null unless completed
     "progress": null,              # percent at the time of the event, for `progress` events only
                                    # (for those, `state` is the run's state when the delivery ran)
     "sent_at": 1790000000, "attempt": 1}

Verify with `verify_signature(key, raw_body, headers)`: recompute the HMAC over the raw bytes
(before any JSON parsing), compare in constant time, and reject stale timestamps.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import urlsplit

import yaml
from pydantic import (AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from prefect import flow, get_run_logger

from deployments.setup import pool_name

PROJECT = Path(__file__).resolve().parent.parent
PREFIX = "ma-webhook"
AUTOMATION_PREFIX = f"{PREFIX}/"          # automation names: ma-webhook/<name>[/progress]
BLOCK_PREFIX = f"{PREFIX}-"               # block names: ma-webhook-<name> (webhook and secret types)
DELIVERY_FLOW = f"{PREFIX}-deliver"
DELIVERY_DEPLOYMENT = PREFIX
DELIVERY_ENTRYPOINT = "deployments/webhooks.py:deliver_webhook"
OWNED_TAG = PREFIX
SIGNATURE_HEADER = "X-Migration-Signature"
TIMESTAMP_HEADER = "X-Migration-Timestamp"
EVENT_HEADER = "X-Migration-Event"
DELIVERY_HEADER = "X-Migration-Delivery"
REPORT_ARTIFACT_KEY = "migration-report"

# our event name -> Prefect event name
STATE_EVENTS = {
    "started": "prefect.flow-run.Running",
    "completed": "prefect.flow-run.Completed",
    "failed": "prefect.flow-run.Failed",
    "cancelled": "prefect.flow-run.Cancelled",
    "crashed": "prefect.flow-run.Crashed",
}
PROGRESS_EVENT = "prefect.artifact.updated"
EVENT_NAMES = (*STATE_EVENTS, "progress")
_OUR_EVENT = {v: k for k, v in STATE_EVENTS.items()} | {PROGRESS_EVENT: "progress"}
_STATE_TYPES = {"Running": "RUNNING", "Completed": "COMPLETED", "Failed": "FAILED",
                "Cancelled": "CANCELLED", "Crashed": "CRASHED"}

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$")
ENV_REF = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")
BLOCK_REF = re.compile(r"^secret/([a-z0-9][a-z0-9-]*)$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
SENSITIVE_KEY = re.compile(r"pass(word|wd|phrase)?|pwd|secret|token|api[_-]?key|credential|private[_-]?key|auth",
                           re.IGNORECASE)
MIN_SECRET_LEN = 16


class WebhookConfigError(ValueError):
    """The subscription file, or something it refers to, is not usable."""


# --------------------------------------------------------------------------------------------
# The file
# --------------------------------------------------------------------------------------------

class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="[a-z0-9-], 1-48 characters; names the automation and blocks")
    url: AnyHttpUrl
    events: list[Literal["started", "completed", "failed", "cancelled", "crashed", "progress"]] = Field(min_length=1)
    secret: Optional[str] = Field(None, description="HMAC key reference: env:VAR or secret/NAME")
    flows: Optional[list[str]] = Field(None, min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    progress_every_seconds: int = Field(60, ge=5, le=86_400)
    enabled: bool = True
    allow_private_urls: bool = True
    verify_tls: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a valid name: use 1-48 lowercase letters, digits and inner hyphens")
        return v

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        dupes = sorted({e for e in v if v.count(e) > 1})
        if dupes:
            raise ValueError(f"listed more than once: {', '.join(dupes)}")
        return v

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        if not (ENV_REF.match(v) or BLOCK_REF.match(v)):
            raise ValueError("must be a reference, env:VAR or secret/NAME (a Prefect Secret block); "
                             "the key itself never goes into the file")
        return v

    @field_validator("flows")
    @classmethod
    def _flows(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v and DELIVERY_FLOW in v:
            raise ValueError(f"{DELIVERY_FLOW!r} is the delivery flow itself; subscribing to it would loop")
        if v and any(not f.strip() for f in v):
            raise ValueError("flow names must not be empty")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not HEADER_NAME.match(k):
                raise ValueError(f"{k!r} is not a valid header name")
            if k.lower() in {"content-type", "content-length", "host"} or k.lower().startswith("x-migration-"):
                raise ValueError(f"header {k!r} is set by the delivery and cannot be overridden")
        return v

    @model_validator(mode="after")
    def _url_scheme(self) -> "Subscription":
        if self.url.scheme not in ("http", "https"):
            raise ValueError("url must be http:// or https://")
        return self

    # names of what this subscription owns
    @property
    def automation_name(self) -> str:
        return f"{AUTOMATION_PREFIX}{self.name}"

    @property
    def progress_automation_name(self) -> str:
        return f"{self.automation_name}/progress"

    @property
    def block_name(self) -> str:
        return f"{BLOCK_PREFIX}{self.name}"

    @property
    def state_events(self) -> list[str]:
        return [e for e in self.events if e != "progress"]

    def about(self) -> str:
        return (f"Managed by migration-assistant `webhooks apply` (deployments/webhooks.py): POST to "
                f"{urlsplit(str(self.url)).hostname}{' signed' if self.secret else ''}. Edits here are overwritten.")

    def automation_tags(self) -> list[str]:
        return [OWNED_TAG]

    def related(self) -> dict | list[dict]:
        """Which runs' events fire the automation: a flow filter (and, for tenants, a run tag)."""
        names: str | list[str] = sorted(self.flows) if self.flows else f"!{DELIVERY_FLOW}"
        return {"prefect.resource.role": "flow", "prefect.resource.name": names}

    def delivery_options(self) -> dict:
        return {}


class WebhookFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhooks: list[Subscription] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> "WebhookFile":
        names = [w.name for w in self.webhooks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"webhook names must be unique; repeated: {', '.join(dupes)}")
        return self


def _format_errors(exc: ValidationError, doc: Any) -> str:
    lines = []
    for err in exc.errors():
        loc = err["loc"]
        where = ""
        for i, part in enumerate(loc):
            if isinstance(part, int):
                where += f"[{part}]"
                if i == 1 and isinstance(doc, dict):
                    try:
                        where += f" ({doc['webhooks'][part].get('name', '?')})"
                    except (KeyError, IndexError, TypeError, AttributeError):
                        pass
            else:
                where += ("." if where else "") + str(part)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "literal_error":
            msg = f"unknown event {err.get('input')!r}; use any of {', '.join(EVENT_NAMES)}"
        lines.append(f"  {where or '(file)'}: {msg}")
    return "\n".join(lines)


def load_subscriptions(path: str | Path) -> WebhookFile:
    """Parse and validate a subscription file; WebhookConfigError names every problem."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise WebhookConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise WebhookConfigError(f"{path}: not valid YAML: {exc}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise WebhookConfigError(f"{path}: expected a mapping with a `webhooks:` list at the top")
    if doc.get("webhooks") is None:
        doc = {**doc, "webhooks": []}
    try:
        return WebhookFile.model_validate(doc)
    except ValidationError as exc:
        raise WebhookConfigError(f"{path}: {exc.error_count()} problem(s):\n{_format_errors(exc, doc)}") from None


# --------------------------------------------------------------------------------------------
# Signing (both ends)
# --------------------------------------------------------------------------------------------

def sign(key: str | bytes, body: bytes) -> str:
    """The X-Migration-Signature value for `body`: 'sha256=<hex HMAC-SHA256>'."""
    k = key.encode() if isinstance(key, str) else key
    return "sha256=" + hmac.new(k, body, hashlib.sha256).hexdigest()


def verify_signature(key: str | bytes, body: bytes, headers: dict, tolerance_seconds: int = 300,
                     now: float | None = None) -> bool:
    """Receiver side: True if the signature matches the raw body and the timestamp is fresh."""
    h = {k.lower(): v for k, v in headers.items()}
    given = h.get(SIGNATURE_HEADER.lower(), "")
    if not hmac.compare_digest(given, sign(key, body)):
        return False
    try:
        ts = int(h.get(TIMESTAMP_HEADER.lower(), ""))
        sent_at = json.loads(body).get("sent_at")
    except (ValueError, AttributeError):
        return False
    return ts == sent_at and abs((now or time.time()) - ts) <= tolerance_seconds


def scrub_parameters(value: Any) -> Any:
    """Parameters without anything that looks like a credential."""
    if isinstance(value, dict):
        return {k: scrub_parameters(v) for k, v in value.items() if not SENSITIVE_KEY.search(str(k))}
    if isinstance(value, list):
        return [scrub_parameters(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"(://[^/@:\s]*):[^/@\s]*@", r"\1:***@", value)
    return value


# --------------------------------------------------------------------------------------------
# The delivery flow (runs on a worker, started by the automations)
# --------------------------------------------------------------------------------------------

class DeliveryFailed(RuntimeError):
    pass


def _summary_from_artifacts(client, flow_run_id) -> Optional[dict]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    arts = client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=[REPORT_ARTIFACT_KEY])))
    if not arts:
        return None
    data = arts[-1].data
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    if not isinstance(data, list):
        return None
    tables = [t for t in data if isinstance(t, dict)]
    verdicts = sorted({str(t.get("verdict")) for t in tables if t.get("verdict")})
    return {"rows": sum(int(t.get("rows") or 0) for t in tables),
            "verdict": verdicts[0] if len(verdicts) == 1 else (", ".join(verdicts) or None),
            "tables": tables}


def build_body(subscription: str, event: str, event_id: str, occurred: str, resource: dict,
               flow_run_id: str, client, progress: Optional[float] = None) -> dict:
    """The JSON body (without sent_at/attempt) for one event, from the event and the API."""
    from uuid import UUID
    our_event = _OUR_EVENT.get(event, event)
    body: dict[str, Any] = {
        "version": 1, "subscription": subscription, "event": our_event, "event_id": event_id,
        "prefect_event": event, "occurred": occurred, "flow_run_id": flow_run_id or None,
        "flow_run_name": None, "flow_name": None, "deployment_name": None, "tags": [],
        "state": {"name": None, "type": None, "message": None},
        "parameters": {}, "summary": None, "progress": None,
    }
    if event.startswith("prefect.flow-run."):
        name = resource.get("prefect.state-name") or event.rsplit(".", 1)[1]
        body["state"] = {"name": name, "type": resource.get("prefect.state-type") or _STATE_TYPES.get(name),
                         "message": resource.get("prefect.state-message") or None}
    run = None
    if flow_run_id:
        run = client.read_flow_run(UUID(flow_run_id))
        body["flow_run_name"] = run.name
        body["tags"] = list(run.tags or [])
        body["parameters"] = scrub_parameters(run.parameters or {})
        body["flow_name"] = client.read_flow(run.flow_id).name
        if run.deployment_id:
            try:
                body["deployment_name"] = client.read_deployment(run.deployment_id).name
            except Exception:  # deleted since
                pass
        if body["state"]["name"] is None and run.state:  # progress: the run's state now
            body["state"] = {"name": run.state.name, "type": run.state.type.value, "message": None}
        if our_event == "completed":
            body["summary"] = _summary_from_artifacts(client, run.id)
    if our_event == "progress":
        body["progress"] = progress
    return body


def _is_progress_artifact(resource: dict, client) -> bool:
    from uuid import UUID
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId
    art_id = resource.get("prefect.resource.id", "").removeprefix("prefect.artifact.")
    try:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[UUID(art_id)])))
    except ValueError:
        return False
    return bool(arts) and arts[0].type == "progress"


RETRY_DELAYS = (5, 15, 45, 120)  # seconds before attempts 2..5


@flow(name=DELIVERY_FLOW, log_prints=False, persist_result=False, validate_parameters=True)
def deliver_webhook(subscription: str, webhook_block: str, event: str, event_id: str = "", occurred: str = "",
                    resource: Optional[dict] = None, flow_run_id: str = "", secret_block: Optional[str] = None,
                    progress: Optional[float] = None, max_attempts: int = 5,
                    retry_delay_seconds: Optional[int] = None) -> dict:
    """Build, sign and POST one webhook for one event. Started by the `ma-webhook/*` automations."""
    import httpx
    from prefect import get_client
    from prefect.blocks.system import Secret
    from prefect.blocks.webhook import Webhook
    from prefect.utilities.urls import validate_restricted_url

    log = get_run_logger()
    resource = resource or {}
    with get_client(sync_client=True) as client:
        if event == PROGRESS_EVENT and not _is_progress_artifact(resource, client):
            log.info("Artifact update is not a progress artifact; nothing to send")
            return {"status": None, "skipped": True}
        body = build_body(subscription, event, event_id, occurred, resource, flow_run_id, client, progress)
    hook = Webhook.load(webhook_block)
    key = None
    if secret_block:
        key = Secret.load(secret_block).get()
        if not isinstance(key, str) or not key:
            raise DeliveryFailed(f"Secret block {secret_block!r} does not hold a non-empty string")
    url = hook.url.get_secret_value()
    host = urlsplit(url).netloc.rsplit("@", 1)[-1]
    if not hook.allow_private_urls:
        validate_restricted_url(url)
    static = dict(hook.headers.get_secret_value() or {})
    max_attempts = max(1, min(max_attempts, len(RETRY_DELAYS) + 1))
    last = ""
    with httpx.Client(verify=hook.verify, timeout=httpx.Timeout(10.0), follow_redirects=False) as http:
        for attempt in range(1, max_attempts + 1):
            sent_at = int(time.time())
            raw = json.dumps({**body, "sent_at": sent_at, "attempt": attempt}, separators=(",", ":"),
                             sort_keys=True, default=str).encode()
            headers = {**static, "Content-Type": "application/json", "User-Agent": "migration-assistant-webhooks/1",
                       EVENT_HEADER: body["event"], DELIVERY_HEADER: event_id or "", TIMESTAMP_HEADER: str(sent_at)}
            if key:
                headers[SIGNATURE_HEADER] = sign(key, raw)
            started = time.perf_counter()
            try:
                resp = http.request(hook.method, url, content=raw, headers=headers)
                ms = 1000 * (time.perf_counter() - started)
                if 200 <= resp.status_code < 300:
                    log.info("Delivered %s for flow run %s to %s: HTTP %d in %.0f ms (attempt %d)",
                             body["event"], flow_run_id, host, resp.status_code, ms, attempt)
                    return {"status": resp.status_code, "attempts": attempt, "event": body["event"]}
                last = f"HTTP {resp.status_code}"
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 425, 429):
                    raise DeliveryFailed(f"{host} refused the {body['event']} webhook: {last}; not retrying")
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            if attempt < max_attempts:
                delay = retry_delay_seconds if retry_delay_seconds is not None else RETRY_DELAYS[attempt - 1]
                log.warning("Webhook to %s failed (%s), attempt %d/%d; retrying in %d s",
                            host, last, attempt, max_attempts, delay)
                time.sleep(delay)
    raise DeliveryFailed(f"Webhook to {host} failed after {max_attempts} attempt(s): {last}")


# --------------------------------------------------------------------------------------------
# apply: file -> blocks, deployment, automations
# --------------------------------------------------------------------------------------------

@dataclass
class ApplySummary:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    automations: dict[str, str] = field(default_factory=dict)   # automation name -> id

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    def as_dict(self) -> dict:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged,
                "deleted": self.deleted, "automations": self.automations}

    def __str__(self) -> str:
        parts = [f"{k} {len(v)}" for k, v in (("created", self.created), ("updated", self.updated),
                                                ("deleted", self.deleted), ("unchanged", self.unchanged))]
        return ", ".join(parts)


def _resolve_ref(ref: str, what: str) -> str:
    """env:VAR or secret/NAME -> the value (at apply time)."""
    if m := ENV_REF.match(ref):
        value = os.environ.get(m.group(1))
        if not value:
            raise WebhookConfigError(f"{what}: environment variable {m.group(1)} is not set or empty")
        return value
    if m := BLOCK_REF.match(ref):
        from prefect.blocks.system import Secret
        try:
            value = Secret.load(m.group(1)).get()
        except ValueError:
            raise WebhookConfigError(f"{what}: no Secret block named {m.group(1)!r}") from None
        if not isinstance(value, str) or not value:
            raise WebhookConfigError(f"{what}: Secret block {m.group(1)!r} must hold a non-empty string")
        return value
    return ref


def _ensure_delivery_deployment(client, summary: ApplySummary, pool: str | None = None):
    from prefect.utilities.callables import parameter_schema
    pool = pool or pool_name()
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT)}}]
    schema = parameter_schema(deliver_webhook).model_dump_for_openapi()
    label = f"deployment {DELIVERY_FLOW}/{DELIVERY_DEPLOYMENT}"
    try:
        existing = client.read_deployment_by_name(f"{DELIVERY_FLOW}/{DELIVERY_DEPLOYMENT}")
    except Exception:  # ObjectNotFound
        existing = None
    if existing and (existing.entrypoint == DELIVERY_ENTRYPOINT and existing.work_pool_name == pool
                     and existing.pull_steps == pull and existing.parameter_openapi_schema == schema):
        summary.unchanged.append(label)
        return existing.id
    flow_id = client.create_flow_from_name(DELIVERY_FLOW)
    dep_id = client.create_deployment(
        flow_id=flow_id, name=DELIVERY_DEPLOYMENT, entrypoint=DELIVERY_ENTRYPOINT, path=str(PROJECT),
        work_pool_name=pool, pull_steps=pull, parameter_openapi_schema=schema, tags=[OWNED_TAG],
        description="Signs and POSTs one webhook per event; started by the ma-webhook/* automations "
                    "(deployments/webhooks.py). Managed by `webhooks apply`.")
    (summary.updated if existing else summary.created).append(label)
    return dep_id


def _ensure_webhook_block(sub: Subscription, summary: ApplySummary) -> None:
    from prefect.blocks.webhook import Webhook
    headers = {k: _resolve_ref(v, f"webhook {sub.name!r}, header {k}") for k, v in sub.headers.items()}
    want = dict(method="POST", url=str(sub.url), headers=headers, allow_private_urls=sub.allow_private_urls,
                verify=sub.verify_tls)
    label = f"block webhook/{sub.block_name}"
    try:
        have = Webhook.load(sub.block_name)
    except ValueError:
        have = None
    if have is not None:
        same = (have.method == want["method"] and have.url.get_secret_value() == want["url"]
                and dict(have.headers.get_secret_value() or {}) == headers
                and have.allow_private_urls == want["allow_private_urls"] and have.verify == want["verify"])
        if same:
            summary.unchanged.append(label)
            return
    Webhook(**want).save(sub.block_name, overwrite=True)
    (summary.updated if have is not None else summary.created).append(label)


def _ensure_secret_block(sub: Subscription, summary: ApplySummary) -> Optional[str]:
    """The Secret block name deliveries read the HMAC key from (ours, or the user's)."""
    if not sub.secret:
        return None
    if m := BLOCK_REF.match(sub.secret):
        _resolve_ref(sub.secret, f"webhook {sub.name!r}, secret")  # must exist and be usable now
        return m.group(1)
    from prefect.blocks.system import Secret
    value = _resolve_ref(sub.secret, f"webhook {sub.name!r}, secret")
    label = f"block secret/{sub.block_name}"
    try:
        have = Secret.load(sub.block_name).get()
    except ValueError:
        have = None
    if have == value:
        summary.unchanged.append(label)
    else:
        Secret(value=value).save(sub.block_name, overwrite=True)
        (summary.updated if have is not None else summary.created).append(label)
    return sub.block_name


def _jinja(template: str) -> dict:
    return {"__prefect_kind": "jinja", "template": template}


def _action(sub: Subscription, deployment_id, secret_block: Optional[str]):
    from prefect.events.actions import RunDeployment
    params = {
        "subscription": sub.name,
        "webhook_block": sub.block_name,
        "secret_block": secret_block,
        "event": _jinja("{{ event.event }}"),
        "event_id": _jinja("{{ event.id }}"),
        "occurred": _jinja("{{ event.occurred.isoformat() }}"),
        "resource": {"__prefect_kind": "json", "value": _jinja("{{ event.resource.root | tojson }}")},
        "flow_run_id": _jinja("{{ flow_run.id }}"),
        # progress artifact updates carry the new value as payload.data; null for state events
        "progress": {"__prefect_kind": "json", "value": _jinja("{{ event.payload.get('data') | tojson }}")},
        **sub.delivery_options(),
    }
    return RunDeployment(source="selected", deployment_id=deployment_id, parameters=params)


def _desired_automations(sub: Subscription, deployment_id, secret_block: Optional[str]) -> list:
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    out = []
    if sub.state_events:
        out.append(AutomationCore(
            name=sub.automation_name, description=sub.about(), enabled=sub.enabled, tags=sub.automation_tags(),
            trigger=EventTrigger(
                expect={STATE_EVENTS[e] for e in sub.state_events},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related=sub.related(),
                for_each={"prefect.resource.id"},
                posture=Posture.Reactive, threshold=1, within=timedelta(0)),
            actions=[_action(sub, deployment_id, secret_block)]))
    if "progress" in sub.events:
        out.append(AutomationCore(
            name=sub.progress_automation_name, description=sub.about(), enabled=sub.enabled, tags=sub.automation_tags(),
            trigger=EventTrigger(
                expect={PROGRESS_EVENT},
                match={"prefect.resource.id": "prefect.artifact.*"},
                match_related=sub.related(),
                for_each={"prefect.resource.id"},   # one bucket per progress artifact, i.e. per run
                posture=Posture.Reactive, threshold=1, within=timedelta(seconds=sub.progress_every_seconds)),
            actions=[_action(sub, deployment_id, secret_block)]))
    return out


def _normalise(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, k) for k, v in value.items() if not (k == "id" and key == "trigger")}
    if isinstance(value, list):
        items = [_normalise(v) for v in value]
        return sorted(items) if all(isinstance(i, str) for i in items) else items
    return value


def _comparable(automation) -> dict:
    from prefect.events.schemas.automations import AutomationCore
    data = AutomationCore.model_validate(automation.model_dump()).model_dump(mode="json")
    data.pop("owner_resource", None)
    data["trigger"] = _normalise(data["trigger"], "trigger")
    return _normalise(data)


def _owned_automations(client, prefix: str = AUTOMATION_PREFIX) -> dict:
    return {a.name: a for a in client.read_automations() if a.name.startswith(prefix)}


def _owned_blocks(client, slug: str) -> dict:
    return {d.name: d for d in client.read_block_documents_by_type(block_type_slug=slug)
            if d.name and d.name.startswith(BLOCK_PREFIX)}


def _check_references(spec: WebhookFile) -> None:
    """Resolve every env:/secret/ reference before anything changes, so a bad file changes nothing."""
    problems = []
    for sub in spec.webhooks:
        refs = [(f"webhook {sub.name!r}, header {k}", v) for k, v in sub.headers.items()]
        if sub.secret:
            refs.append((f"webhook {sub.name!r}, secret", sub.secret))
        for what, ref in refs:
            try:
                value = _resolve_ref(ref, what)
            except WebhookConfigError as exc:
                problems.append(str(exc))
                continue
            if ref == sub.secret and len(value) < MIN_SECRET_LEN:
                problems.append(f"{what}: the key must have at least {MIN_SECRET_LEN} characters")
    if problems:
        raise WebhookConfigError("nothing was changed:\n  " + "\n  ".join(problems))


def _referenced_blocks(spec: WebhookFile) -> set[str]:
    """Secret blocks the file names itself (secret/NAME): never deleted, whatever their name."""
    refs = [s.secret for s in spec.webhooks if s.secret] + [v for s in spec.webhooks for v in s.headers.values()]
    return {m.group(1) for r in refs if (m := BLOCK_REF.match(r))}


def _upsert_automation(client, have, want, summary: ApplySummary) -> None:
    label = f"automation {want.name}"
    if have is None:
        auto_id = client.create_automation(want)
        summary.created.append(label)
    elif _comparable(have) == _comparable(want):
        auto_id = have.id
        summary.unchanged.append(label)
    else:
        client.update_automation(have.id, want)
        auto_id = have.id
        summary.updated.append(label)
    summary.automations[want.name] = str(auto_id)


def apply_webhooks(path: str | Path) -> ApplySummary:
    """Make Prefect's ma-webhook objects match the subscription file at `path`; idempotent."""
    from prefect import get_client

    spec = load_subscriptions(path)
    _check_references(spec)
    summary = ApplySummary()
    with get_client(sync_client=True) as client:
        existing = _owned_automations(client)
        deployment_id = _ensure_delivery_deployment(client, summary) if spec.webhooks else None
        wanted_autos: set[str] = set()
        wanted_webhook_blocks: set[str] = set()
        wanted_secret_blocks: set[str] = _referenced_blocks(spec)
        for sub in spec.webhooks:
            _ensure_webhook_block(sub, summary)
            wanted_webhook_blocks.add(sub.block_name)
            secret_block = _ensure_secret_block(sub, summary)
            if secret_block:
                wanted_secret_blocks.add(secret_block)
            for want in _desired_automations(sub, deployment_id, secret_block):
                wanted_autos.add(want.name)
                _upsert_automation(client, existing.get(want.name), want, summary)
        for name, auto in existing.items():   # first the automations, so no survivor names a deleted block
            if name not in wanted_autos:
                client.delete_automation(auto.id)
                summary.deleted.append(f"automation {name}")
        for slug, wanted in (("webhook", wanted_webhook_blocks), ("secret", wanted_secret_blocks)):
            for name, doc in _owned_blocks(client, slug).items():
                if name not in wanted:
                    client.delete_block_document(doc.id)
                    summary.deleted.append(f"block {slug}/{name}")
    return summary


def list_webhooks() -> list[dict]:
    """The ma-webhook automations on the server, as rows (no secrets, URL host only)."""
    from prefect import get_client
    rows = []
    with get_client(sync_client=True) as client:
        for name, auto in sorted(_owned_automations(client).items()):
            trig = auto.trigger
            action = auto.actions[0] if auto.actions else None
            params = getattr(action, "parameters", None) or {}
            related = trig.match_related
            spec = related[0] if isinstance(related, list) and related else related  # flows come first
            flows = spec.root.get("prefect.resource.name") if spec is not None else None
            rows.append({
                "name": name, "id": str(auto.id), "enabled": auto.enabled,
                "events": sorted(_OUR_EVENT.get(e, e) for e in getattr(trig, "expect", set())),
                "flows": "all" if (not flows or str(flows).startswith("!")) else flows,
                "webhook_block": params.get("webhook_block"), "signed": bool(params.get("secret_block")),
                "description": auto.description,
            })
    return rows


# --------------------------------------------------------------------------------------------
# One subscription at a time, owned by a tenant (the REST API's POST /webhooks/)
# --------------------------------------------------------------------------------------------

TENANT_PREFIX = "ma-tenant-webhook"   # apart from ma-webhook*, so `apply` of a file never touches these


class TenantSubscription(Subscription):
    """A subscription that fires only for runs tagged `tenant:<tenant_id>`. Header values are literal:
    env:/secret/ references would read the server's own environment and blocks."""

    tenant_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    title: str = Field(min_length=1, max_length=200)
    max_attempts: int = Field(5, ge=1, le=len(RETRY_DELAYS) + 1)
    retry_delay_seconds: Optional[int] = Field(None, ge=0, le=600)

    @field_validator("headers")
    @classmethod
    def _literal_headers(cls, v: dict[str, str]) -> dict[str, str]:
        for k, value in v.items():
            if ENV_REF.match(value) or BLOCK_REF.match(value):
                raise ValueError(f"header {k!r}: references (env:, secret/) are not allowed here; send the value")
        return v

    @property
    def automation_name(self) -> str:
        return f"{TENANT_PREFIX}/{self.tenant_id}/{self.name}"

    @property
    def block_name(self) -> str:
        return f"{TENANT_PREFIX}-{self.name}"

    def about(self) -> str:
        return self.title

    def automation_tags(self) -> list[str]:
        return [TENANT_PREFIX, f"tenant:{self.tenant_id}"]

    def related(self) -> list[dict]:
        tag = {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.tenant:{self.tenant_id}"}
        return [super().related(), tag]

    def delivery_options(self) -> dict:
        return {"max_attempts": self.max_attempts, "retry_delay_seconds": self.retry_delay_seconds}


def apply_subscription(sub: TenantSubscription, secret: Optional[str]) -> ApplySummary:
    """Create or update one tenant subscription (blocks, delivery deployment, automations); others untouched."""
    from prefect import get_client
    from prefect.blocks.system import Secret

    summary = ApplySummary()
    with get_client(sync_client=True) as client:
        deployment_id = _ensure_delivery_deployment(client, summary)
        _ensure_webhook_block(sub, summary)
        if secret:
            Secret(value=secret).save(sub.block_name, overwrite=True)
        existing = _owned_automations(client, f"{TENANT_PREFIX}/")
        for want in _desired_automations(sub, deployment_id, sub.block_name if secret else None):
            _upsert_automation(client, existing.get(want.name), want, summary)
    return summary


def tenant_subscriptions(tenant_id: Optional[str] = None) -> list[dict]:
    """Tenant subscriptions on the server (all tenants when None): name, tenant, title, events, ids."""
    from prefect import get_client
    found: dict[str, dict] = {}
    with get_client(sync_client=True) as client:
        for name, auto in sorted(_owned_automations(client, f"{TENANT_PREFIX}/").items()):
            _, tenant, sub_name = name.split("/")[:3]
            if tenant_id is not None and tenant != tenant_id:
                continue
            row = found.setdefault(sub_name, {"name": sub_name, "tenant_id": tenant, "title": auto.description,
                                               "enabled": auto.enabled, "events": [], "automation_ids": []})
            row["events"] = sorted({*row["events"], *(_OUR_EVENT.get(e, e) for e in auto.trigger.expect)})
            row["automation_ids"].append(str(auto.id))
    return list(found.values())


def remove_subscription(tenant_id: str, name: str) -> bool:
    """Delete a tenant subscription's automations and blocks; False if there was none."""
    from prefect import get_client
    prefix = f"{TENANT_PREFIX}/{tenant_id}/{name}"
    with get_client(sync_client=True) as client:
        autos = [a for n, a in _owned_automations(client, f"{TENANT_PREFIX}/").items()
                 if n == prefix or n.startswith(prefix + "/")]
        for auto in autos:
            client.delete_automation(auto.id)
        for slug in ("webhook", "secret"):
            try:
                doc = client.read_block_document_by_name(f"{TENANT_PREFIX}-{name}", block_type_slug=slug)
                client.delete_block_document(doc.id)
            except Exception:  # ObjectNotFound: unsigned subscriptions have no secret block
                pass
    return bool(autos)
