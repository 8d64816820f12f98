"""Jarvis tables: the database-master registry and operations (each operation points at its flow run).

An operation keeps its config with passwords masked; the credentials live in Prefect blocks named by
`source_ref` / `destination_ref`. Status, times, rows and errors are read from the flow run.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from api_shim.store.models import Base, utcnow


class JarvisDatabaseMaster(Base):
    __tablename__ = "jarvis_database_master"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(200))
    service_url: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JarvisOperation(Base):
    __tablename__ = "jarvis_operations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True, index=True)
    user_id: Mapped[int | None] = mapped_column(nullable=True)
    username: Mapped[str] = mapped_column(String(200))
    source_id: Mapped[int] = mapped_column(ForeignKey("jarvis_database_master.id"))
    operation_type: Mapped[str] = mapped_column(String(16))
    schedule_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    config_data: Mapped[dict] = mapped_column(default=dict)  # passwords masked
    source_ref: Mapped[str] = mapped_column(String(300))
    destination_ref: Mapped[str] = mapped_column(String(300))
    flow_run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
