"""migrate-tables with its chunks spread over a Dask cluster (prefect-dask).

    from flows.migrate_tables_dask import on_dask
    on_dask("tcp://scheduler:8786")(source=..., destination=..., parallel=8)   # an existing cluster
    on_dask(workers=4)(source=..., destination=...)                          # a local cluster per run

The deployment `migrate-tables-dask/on-demand` uses the scheduler named in MA_DASK_ADDRESS,
or starts a local cluster for each run. Embedded ClickHouse (chDB) cannot be shared between
processes, so use a ClickHouse server as the destination on Dask.
"""
from __future__ import annotations

import os

from prefect_dask import DaskTaskRunner

from flows.migrate_tables import migrate_tables


def on_dask(address: str | None = None, workers: int = 2):
    runner = DaskTaskRunner(address=address) if address else DaskTaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None})
    return migrate_tables.with_options(name="migrate-tables-dask", task_runner=runner)


migrate_tables_dask = on_dask(os.environ.get("MA_DASK_ADDRESS"))
