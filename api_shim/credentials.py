"""Credentials that callers send are kept in Prefect blocks owned by their tenant; flows get the block name."""
from __future__ import annotations

import re
import uuid

from prefect.client.orchestration import PrefectClient

from blocks.save import block_for
from connectors.endpoint import Endpoint


def block_name(tenant_id: str | None, purpose: str) -> str:
    """A block name that says whose it is and what for: `t-<tenant>-<purpose>-<random>`."""
    clean = lambda s: re.sub(r"[^a-z0-9-]+", "-", (s or "none").lower()).strip("-")[:40] or "x"  # noqa: E731
    return f"t-{clean(tenant_id)}-{clean(purpose)}-{uuid.uuid4().hex[:10]}"


async def store_endpoint(endpoint: Endpoint, tenant_id: str | None, purpose: str) -> str:
    """Save `endpoint` (with its password) as a block; returns the reference flows take, `<slug>/<name>`."""
    block, slug = block_for(endpoint)
    name = block_name(tenant_id, purpose)
    await block.asave(name, overwrite=True)
    return f"{slug}/{name}"


def owner_of(ref: str) -> str | None:
    """The tenant a stored block belongs to (None for blocks the shim did not create)."""
    match = re.match(r"^[a-z-]+/t-([a-z0-9-]+?)-", ref or "")
    return match.group(1) if match else None


async def delete_endpoint(client: PrefectClient, ref: str) -> None:
    slug, name = ref.split("/", 1)
    try:
        doc = await client.read_block_document_by_name(name, block_type_slug=slug)
        await client.delete_block_document(doc.id)
    except Exception:  # already gone
        pass
