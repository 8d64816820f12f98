"""First users and tenants. Development mode seeds the documented examples (admin/admin123 and
testuser/test123 in tenant1); production creates one Admin from MA_ADMIN_USERNAME / MA_ADMIN_PASSWORD
when the store has no users yet."""
from __future__ import annotations

import os

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api_shim.security import hash_password
from api_shim.settings import Settings
from api_shim.store.models import Tenant, User

DEV_TENANT = ("tenant1", "Example organization")
DEV_USERS = [("admin", "admin123", "Admin", None, "admin@example.com"),
             ("testuser", "test123", "User", "tenant1", "testuser@example.com")]


async def seed(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    async with sessions() as session:
        if (await session.execute(select(func.count()).select_from(User))).scalar_one():
            return
        if settings.development:
            session.add(Tenant(id=DEV_TENANT[0], name=DEV_TENANT[1]))
            await session.flush()
            for username, password, role, tenant, email in DEV_USERS:
                session.add(User(username=username, password_hash=hash_password(password), role=role,
                                 tenant_id=tenant, email=email))
        elif os.environ.get("MA_ADMIN_USERNAME") and os.environ.get("MA_ADMIN_PASSWORD"):
            session.add(User(username=os.environ["MA_ADMIN_USERNAME"], role="Admin",
                             password_hash=hash_password(os.environ["MA_ADMIN_PASSWORD"])))
        await session.commit()
