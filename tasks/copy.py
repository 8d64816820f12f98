"""extract + load for one chunk: stream Arrow batches from the source into the staging table.

Reading runs in a thread one or two batches ahead of writing, so the source and the
destination work at the same time while memory stays bounded by the queue.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from connectors.base import KeyRange
from connectors.canonical import Checksum, conform, row_hashes
from tasks.connections import using
from tasks.plan import TablePlan
from tasks.retry import RETRY_POLICY

BATCH_ROWS = 65536
_DONE = object()


@dataclass
class ChunkResult:
    table: str
    chunk: KeyRange
    rows: int
    bytes: int
    seconds: float
    checksum: Checksum


@task(name="extract-load", cache_policy=NO_CACHE, task_run_name="copy {plan.table} {chunk.lo}..{chunk.hi}", **RETRY_POLICY)
def copy_chunk(source_ref: str, dest_ref: str, plan: TablePlan, chunk: KeyRange, checksum_rows: bool = True) -> ChunkResult:
    """Copy one key range into staging; with `checksum_rows`, hash what was extracted for verify
    (JSON as the source printed it: verify compares canonical forms only when the texts differ)."""
    started = time.perf_counter()
    with using(source_ref, dest_ref) as (source, dest):
        if task_run.run_count > 1:  # a retry starts from a clean range; the first attempt finds it empty
            dest.delete_range(plan.staging, chunk)
        if plan.raw_stream:  # the rows are hashed as they pass, verify hashes those the destination got
            rows, nbytes, hashed = dest.stream_from(source, plan.source_schema, plan.row_filter(chunk), plan.staging,
                                                    checksum=checksum_rows)
            return ChunkResult(plan.table, chunk, rows, nbytes, time.perf_counter() - started, hashed)
        checksum, nbytes = Checksum(), 0
        hashed = (lambda b: dest.in_place_row_hashes(b, plan.dest_schema)) if plan.hashed_in_place else row_hashes

        def extracted(read):  # runs in the extract thread: conversion and hashing overlap the load
            nonlocal nbytes
            for batch in read:
                batch = conform(batch, plan.dest_schema) if plan.casts else batch
                if checksum_rows:
                    checksum.add_hashes(hashed(batch))
                else:
                    checksum.rows += batch.num_rows
                nbytes += batch.nbytes
                yield batch

        read = source.read_batches(plan.source_schema, plan.row_filter(chunk), BATCH_ROWS)
        with contextlib.closing(_prefetch(extracted(read))) as batches:  # a failed load stops the extract thread at once
            dest.write_batches(plan.dest_schema, batches)
    return ChunkResult(plan.table, chunk, checksum.rows, nbytes, time.perf_counter() - started, checksum)


def _prefetch(batches, depth: int = 2):
    """Iterate `batches` in a background thread, at most `depth` batches ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for b in batches:
                while not stop.is_set():
                    try:
                        q.put(b, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put(exc)

    thread = threading.Thread(target=produce, daemon=True, name="extract")
    thread.start()
    try:
        while (item := q.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)
