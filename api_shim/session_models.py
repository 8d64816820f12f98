"""Request and response models of the Migration Assistant's migration sessions (they make the OpenAPI exact)."""
from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api_shim.ma_config import MigrationConfig

SessionStatusName = Literal["pending", "scheduled", "starting", "running", "paused", "cancelling", "completed",
                            "failed", "cancelled", "rolling_back", "rolled_back", "rollback_failed"]


class SessionCreated(BaseModel):
    session_id: str
    status: Literal["created"] = "created"
    message: str
    created_at: dt.datetime


class SessionAction(BaseModel):
    session_id: str
    status: str
    message: str


class RollbackStarted(SessionAction):
    rollback_run_id: str


class StartRequest(BaseModel):
    auto_rollback: bool = Field(True, description="The flow always restores the destination when a run fails; "
                                                  "false is accepted but cannot switch that off")
    send_notifications: bool = Field(False, description="Notifications are sent by webhooks subscriptions")


class RollbackOptions(BaseModel):
    restore_files: bool = True
    restore_database: bool = True
    restore_configuration: bool = True


class RollbackRequest(BaseModel):
    backup_id: str | None = Field(None, description="Ignored: a session's backup is the one its run kept")
    rollback_options: RollbackOptions = Field(default_factory=RollbackOptions)


class Step(BaseModel):
    name: str
    description: str
    status: Literal["pending", "running", "completed", "failed"]
    task_runs: int


class PerformanceMetrics(BaseModel):
    rows_transferred: int | None = Field(None, description="known once the run's report exists")
    bytes_transferred: int | None = None
    data_transferred: str | None = None
    transfer_rate_average: str | None = None
    rows_per_second: float | None = None
    tables_completed: int = 0
    tables_total: int | None = None
    chunks_copied: int = 0
    chunks_verified: int = 0


class CurrentOperation(BaseModel):
    type: str
    task: str
    progress: float | None = None


class SessionStatus(BaseModel):
    session_id: str
    name: str
    status: SessionStatusName
    progress: float
    current_step: str | None
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    duration: float | None
    error: str | None
    steps_completed: int
    steps_total: int
    steps: list[Step]
    performance_metrics: PerformanceMetrics
    current_operation: CurrentOperation | None = None
    scheduled_time: dt.datetime | None = None
    rollback_run_id: str | None = None


class SessionSummary(BaseModel):
    session_id: str
    name: str
    status: SessionStatusName
    created_at: dt.datetime | None
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    source_type: str | None
    destination_type: str | None
    progress: float


class LogEntry(BaseModel):
    timestamp: dt.datetime
    level: str
    message: str
    component: str
    details: dict[str, Any] = Field(default_factory=dict)


class SessionLogs(BaseModel):
    session_id: str
    logs: list[LogEntry]
    total_logs: int = Field(description="log entries returned")
    has_more: bool


class OverallMetrics(BaseModel):
    duration: float | None
    progress: float
    estimated_remaining: float | None


class TransferMetrics(BaseModel):
    rate_current: str | None
    rate_average: str | None
    rate_peak: str | None
    bytes_transferred: int | None
    bytes_total: int | None
    files_transferred: int = 0
    files_total: int = 0


class DatabaseMetrics(BaseModel):
    tables_migrated: int
    tables_total: int | None
    rows_migrated: int | None
    rows_total: int | None
    data_size: str | None
    tables: list[dict[str, Any]] = Field(default_factory=list, description="the run's migration report, per table")


class SystemMetrics(BaseModel):
    """Not measured by the flow yet: every field is null."""
    cpu_usage: float | None = None
    memory_usage: str | None = None
    disk_usage: str | None = None
    network_usage: str | None = None


class ErrorMetrics(BaseModel):
    total_errors: int
    total_warnings: int
    retry_count: int


class MetricsBody(BaseModel):
    overall: OverallMetrics
    transfer: TransferMetrics
    database: DatabaseMetrics
    system: SystemMetrics
    errors: ErrorMetrics


class SessionMetrics(BaseModel):
    session_id: str
    metrics: MetricsBody


class BatchOptions(BaseModel):
    parallel_limit: int = Field(2, ge=1, le=50)
    stop_on_failure: bool = False


class BatchRequest(BaseModel):
    migrations: list[MigrationConfig] = Field(min_length=1, max_length=100)
    batch_options: BatchOptions = Field(default_factory=BatchOptions)


class BatchCreated(BaseModel):
    batch_id: str
    sessions: list[SessionCreated]
    parallel_limit: int
    stop_on_failure: bool
    message: str


class ScheduleNotifications(BaseModel):
    model_config = ConfigDict(extra="allow")
    before_start: str | None = None
    on_completion: bool = False


class ScheduleRequest(BaseModel):
    schedule_type: Literal["datetime"] = "datetime"
    scheduled_time: dt.datetime
    timezone: str = Field("UTC", description="IANA zone for a scheduled_time without an offset")
    auto_start: Literal[True] = Field(True, description="a scheduled session starts at its time")
    notifications: ScheduleNotifications | None = None


class SessionScheduled(BaseModel):
    session_id: str
    status: Literal["scheduled"] = "scheduled"
    scheduled_time: dt.datetime
    message: str
