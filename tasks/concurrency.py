"""One Prefect global concurrency limit per destination: two runs never load the same destination at once.

The second run waits for the first to publish (or fail); it neither fails nor interleaves.
"""
from __future__ import annotations

import contextlib
import hashlib
import re

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


def limit_name(destination: str) -> str:
    """A stable limit name for an endpoint reference (Prefect names allow no '/', '%', '&', '<' or '>')."""
    slug = re.sub(r"[^a-z0-9]+", "-", destination.lower()).strip("-")[:60]
    return f"migration-destination-{slug}-{hashlib.sha1(destination.encode()).hexdigest()[:8]}"


def ensure_limit(name: str, slots: int) -> None:
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
                return
            except ObjectAlreadyExists:  # a run starting at the same moment made it first
                limit = client.read_global_concurrency_limit_by_name(name)
        if limit.limit != slots:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots))


@contextlib.contextmanager
def destination_lock(destination: str, slots: int, log):
    """Hold one of the destination's `slots` while planning, loading and publishing."""
    name = limit_name(destination)
    ensure_limit(name, slots)
    log.info("Waiting for a free slot on the destination (limit %s: %d run(s) at a time)", name, slots)
    with concurrency(name, occupy=1, strict=True):
        log.info("Destination slot acquired")
        yield
