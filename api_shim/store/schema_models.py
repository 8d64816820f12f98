"""Schema Orchestrator tables: registered databases, migration definitions, approvals and executions.

Credentials live in Prefect blocks; a database row keeps only their references and masked connection
strings. An execution row ties a flow run of `schema-migration` (its id IS the execution id) to its
migration; status, phase, progress and metrics are read from the run.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from api_shim.store.models import Base, utcnow


class SchemaDatabase(Base):
    __tablename__ = "schema_databases"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(32))  # PostgreSQL, MySQL, MariaDB, ClickHouse
    environment: Mapped[str] = mapped_column(String(32))
    master_ref: Mapped[str] = mapped_column(String(300))  # block reference
    master_masked: Mapped[str] = mapped_column(String(2000))
    replicas: Mapped[list] = mapped_column(default=list)  # [{replicaId, ref, role, masked}]
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SchemaMigration(Base):
    __tablename__ = "schema_migrations"
    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    database_id: Mapped[str] = mapped_column(ForeignKey("schema_databases.id"), index=True)
    script: Mapped[str] = mapped_column(Text)
    rollback_script: Mapped[str] = mapped_column(Text)
    strategy: Mapped[str] = mapped_column(String(32))
    declared_risk: Mapped[str | None] = mapped_column(String(16), nullable=True)
    risk_level: Mapped[str] = mapped_column(String(16))
    requires_approval: Mapped[bool] = mapped_column(default=False)
    estimated_duration: Mapped[int] = mapped_column(Integer, default=1)
    tags: Mapped[list] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(32), default="Draft", index=True)
    execution_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # the execution `status` follows
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SchemaApproval(Base):
    __tablename__ = "schema_approvals"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    migration_id: Mapped[str] = mapped_column(ForeignKey("schema_migrations.id"), index=True)
    execution_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # the run waiting for it
    status: Mapped[str] = mapped_column(String(16), default="Pending")  # Pending Approved Rejected Expired
    submitted_by: Mapped[str] = mapped_column(String(200))
    submitted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    reviewer: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)


class SchemaExecution(Base):
    __tablename__ = "schema_executions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the flow run id
    migration_id: Mapped[str] = mapped_column(ForeignKey("schema_migrations.id"), index=True)
    dry_run: Mapped[bool] = mapped_column(default=False)
    phases: Mapped[list] = mapped_column(default=list)  # phase names, in order
    started_by: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    rollback_run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
