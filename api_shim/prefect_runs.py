"""The shim's window onto Prefect: create, release, cancel and read flow runs, their logs and artifacts.

A migration session, a Jarvis operation and a schema execution each ARE a flow run. Runs carry tags
`tenant:<id>` and `owner:<user>` so that lists can be filtered by tenant without a table of our own.
A run created but not started is a Scheduled run named "Pending" far in the future (workers ignore it);
starting it moves it to Scheduled now.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import threading
from typing import Any, Awaitable, Callable, TypeVar
from uuid import UUID

from fastapi import Request
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, FlowRunFilter,
                                            FlowRunFilterId, FlowRunFilterStartTime, FlowRunFilterState, FlowRunFilterStateName,
                                            FlowRunFilterStateType, FlowRunFilterTags, LogFilter, LogFilterFlowRunId,
                                            LogFilterLevel, LogFilterTimestamp)
from prefect.client.schemas.objects import FlowRun, StateType, TaskRun
from prefect.client.schemas.sorting import FlowRunSort, LogSort, TaskRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling, Scheduled

from api_shim.errors import ApiError

T = TypeVar("T")
log = logging.getLogger("api_shim")
HELD_STATE = "Pending"
FAR_FUTURE = dt.datetime(2999, 1, 1, tzinfo=dt.timezone.utc)
LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}

_STATUS = {StateType.RUNNING: "running", StateType.COMPLETED: "completed", StateType.FAILED: "failed",
           StateType.CRASHED: "failed", StateType.CANCELLED: "cancelled", StateType.CANCELLING: "cancelling",
           StateType.PAUSED: "paused", StateType.PENDING: "starting", StateType.SCHEDULED: "scheduled"}


async def prefect_client(request: Request) -> PrefectClient:
    """FastAPI dependency: the app's one Prefect client (opened at start-up)."""
    return request.app.state.prefect


class OffLoopReader:
    """A second event loop on its own thread, with its own Prefect client. Reads that parse a lot (a running
    migration's hundreds of task runs) happen there, so the server's loop keeps answering meanwhile: the GIL
    hands it the processor every few milliseconds instead of after the whole parse."""

    def __init__(self):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: PrefectClient | None = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._client = loop.run_until_complete(get_client().__aenter__())
            self._loop = loop
            ready.set()
            loop.run_forever()
        threading.Thread(target=serve, name="prefect-reader", daemon=True).start()
        if not ready.wait(60):
            raise RuntimeError("the Prefect reader thread did not start")

    async def run(self, read: Callable[[PrefectClient], Awaitable[T]]) -> T:
        """`read(client)` run on the reader's loop; awaited from the caller's."""
        with self._lock:
            if self._loop is None:
                self._start()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(read(self._client), self._loop))


OFF_LOOP = OffLoopReader()


def tenant_tags(tenant_id: str | None, owner: str) -> list[str]:
    return [f"tenant:{tenant_id or '-'}", f"owner:{owner}"]


def tag_value(run: FlowRun, prefix: str) -> str | None:
    for tag in run.tags or []:
        if tag.startswith(prefix + ":"):
            value = tag.split(":", 1)[1]
            return None if value == "-" else value
    return None


def status_of(run: FlowRun) -> str:
    """pending (created, not started), scheduled, starting, running, paused, completed, failed, cancelled."""
    state = run.state
    if state is None:
        return "pending"
    if state.type == StateType.SCHEDULED and state.name == HELD_STATE:
        return "pending"
    return _STATUS.get(state.type, state.type.value.lower())


async def deployment_id(client: PrefectClient, name: str) -> UUID:
    try:
        return (await client.read_deployment_by_name(name)).id
    except ObjectNotFound:
        raise ApiError(503, "DEPLOYMENT_MISSING", f"Deployment {name!r} is not registered on the Prefect server",
                       {"deployment": name, "fix": "run `make deploy`"}) from None


async def create_run(client: PrefectClient, deployment: str, parameters: dict[str, Any], tags: list[str],
                     *, name: str | None = None, hold: bool = False,
                     scheduled_at: dt.datetime | None = None) -> FlowRun:
    """A flow run of `deployment`: held until released, scheduled at a time, or due now."""
    state = None
    if hold:
        state = Scheduled(scheduled_time=FAR_FUTURE, name=HELD_STATE)
    elif scheduled_at is not None:
        state = Scheduled(scheduled_time=scheduled_at)
    return await client.create_flow_run_from_deployment(
        await deployment_id(client, deployment), parameters=parameters, tags=tags, name=name, state=state)


async def release_run(client: PrefectClient, run_id: UUID | str, when: dt.datetime | None = None) -> None:
    """Let a held run start now (or at `when`)."""
    await client.set_flow_run_state(run_id, Scheduled(scheduled_time=when or dt.datetime.now(dt.timezone.utc)),
                                    force=True)


async def cancel_run(client: PrefectClient, run: FlowRun) -> None:
    if run.state and run.state.type in (StateType.RUNNING, StateType.PAUSED, StateType.PENDING):
        await client.set_flow_run_state(run.id, Cancelling(), force=True)
    else:
        await client.set_flow_run_state(run.id, Cancelled(message="Cancelled before it started"), force=True)


async def read_run(client: PrefectClient, run_id: str) -> FlowRun | None:
    try:
        return await client.read_flow_run(UUID(str(run_id)))
    except (ValueError, ObjectNotFound):
        return None


async def wait_for_final(client: PrefectClient, run_id: UUID, timeout: float, poll: float = 1.0) -> FlowRun:
    """The run once it reached a final state (completed, failed, crashed, cancelled), or as it is at `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    run = await client.read_flow_run(run_id)
    while not (run.state and run.state.is_final()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(poll)
        run = await client.read_flow_run(run_id)
    return run


async def find_runs(client: PrefectClient, tags: list[str], *, limit: int | None = None, offset: int = 0,
                    ids: list[UUID] | None = None) -> list[FlowRun]:
    """Runs carrying every tag in `tags`, newest first."""
    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=tags),
                        id=FlowRunFilterId(any_=ids) if ids is not None else None)
    return await client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.START_TIME_DESC,
                                       limit=limit, offset=offset)


async def run_logs(client: PrefectClient, run_id: UUID, *, level: str | None = None, limit: int = 100,
                   since: dt.datetime | None = None) -> list[dict[str, Any]]:
    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]),
                    level=LogFilterLevel(ge_=LOG_LEVELS[level.upper()]) if level else None,
                    timestamp=LogFilterTimestamp(after_=since) if since else None)
    logs = await client.read_logs(log_filter=flt, limit=limit, sort=LogSort.TIMESTAMP_ASC)
    names = {v: k for k, v in LOG_LEVELS.items()}
    return [{"timestamp": log.timestamp.isoformat(), "level": names.get(log.level, str(log.level)),
             "message": log.message, "logger": log.name} for log in logs]


async def run_artifacts(client: PrefectClient, run_id: UUID) -> dict[str, Any]:
    """The run's artifacts by key (the newest of each), with their data."""
    found = await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    by_key: dict[str, Any] = {}
    for artifact in sorted(found, key=lambda a: a.created or dt.datetime.min.replace(tzinfo=dt.timezone.utc)):
        by_key[artifact.key or artifact.type or str(artifact.id)] = artifact.data
    return by_key


# status_of's names -> (state types, state names or None): what a status filter asks Prefect for
STATUS_STATES: dict[str, tuple[list[StateType], list[str] | None]] = {
    "pending": ([StateType.SCHEDULED], [HELD_STATE]), "scheduled": ([StateType.SCHEDULED], ["Scheduled", "Late"]),
    "starting": ([StateType.PENDING], None), "running": ([StateType.RUNNING], None),
    "completed": ([StateType.COMPLETED], None), "failed": ([StateType.FAILED, StateType.CRASHED], None),
    "cancelled": ([StateType.CANCELLED], None), "cancelling": ([StateType.CANCELLING], None),
    "paused": ([StateType.PAUSED], None)}


async def find_runs_with_status(client: PrefectClient, tags: list[str], status: str, *, limit: int | None = None,
                                offset: int = 0) -> list[FlowRun]:
    """Like find_runs, only runs whose status_of is `status` (a key of STATUS_STATES)."""
    types, names = STATUS_STATES[status]
    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=types),
                               name=FlowRunFilterStateName(any_=names) if names else None)
    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=tags), state=state)
    return await client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.START_TIME_DESC,
                                       limit=limit, offset=offset)


async def run_tasks(client: PrefectClient, run_id: UUID, limit: int = 200) -> list[TaskRun]:
    """The run's task runs, the most recently scheduled first (at most `limit`)."""
    return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
                                       sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=limit)


async def add_tags(client: PrefectClient, run: FlowRun, tags: list[str]) -> None:
    await client.update_flow_run(run.id, tags=[*(run.tags or []), *tags])


async def runs_started_between(client: PrefectClient, tags: list[str], start: dt.datetime, end: dt.datetime,
                               page: int = 200) -> list[FlowRun]:
    """Every run carrying all `tags` that started within [start, end], oldest first (read page by page)."""
    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=tags),
                        start_time=FlowRunFilterStartTime(after_=start, before_=end))
    found: list[FlowRun] = []
    while True:
        batch = await client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.START_TIME_ASC, limit=page,
                                            offset=len(found))
        found += batch
        if len(batch) < page:
            return found


async def artifact_of_runs(client: PrefectClient, run_ids: list[UUID], key: str, page: int = 200) -> dict[UUID, Any]:
    """The newest artifact called `key` of each run, by run id (its data, JSON text decoded)."""
    data: dict[UUID, Any] = {}
    for i in range(0, len(run_ids), page):
        flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids[i:i + page]),
                             key=ArtifactFilterKey(any_=[key]))
        for artifact in sorted(await client.read_artifacts(artifact_filter=flt),
                               key=lambda a: a.created or dt.datetime.min.replace(tzinfo=dt.timezone.utc)):
            value = artifact.data
            with contextlib.suppress(ValueError, TypeError):
                value = json.loads(value) if isinstance(value, str) else value
            data[artifact.flow_run_id] = value
    return data



async def latest_artifact(client: PrefectClient, run_id: UUID, key: str):
    """The run's newest artifact called `key` (with its data and description), or None."""
    flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), key=ArtifactFilterKey(any_=[key]))
    found = await client.read_artifacts(artifact_filter=flt)
    return max(found, key=lambda a: a.updated or a.created or dt.datetime.min.replace(tzinfo=dt.timezone.utc), default=None)
