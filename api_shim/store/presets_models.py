"""Migration templates (custom presets) that tenants save: a configuration with `{{variable}}`
placeholders and the variables it declares. Built-in presets are code (api_shim/presets_catalog.py)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from api_shim.store.models import Base, utcnow


class MigrationTemplate(Base):
    __tablename__ = "ma_templates"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    template: Mapped[dict] = mapped_column(default=dict)
    variables: Mapped[list] = mapped_column(default=list)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
