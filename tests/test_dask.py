"""Chunks of one large table spread over a Dask LocalCluster with two worker processes."""
from __future__ import annotations

import psycopg

from flows.migrate_tables_dask import on_dask
from tasks.verify import compare_tables
from tests.helpers import open_url


def test_migration_on_a_two_worker_dask_cluster_is_an_exact_copy(postgres_db):
    source, destination = postgres_db(), postgres_db()
    with psycopg.connect(source, autocommit=True) as c:
        c.execute("CREATE TABLE big (id bigint PRIMARY KEY, label text, amount numeric(12,2), at timestamptz)")
        c.execute("INSERT INTO big SELECT g, md5(g::text), g / 100.0, now() - g * interval '1 s' "
                  "FROM generate_series(1, 100000) g")

    report = on_dask(workers=2)(source=source, destination=destination, tables=["big"], chunk_rows=25_000, parallel=4)

    assert report["verdict"] == "verified" and report["rows"] == 100_000
    assert compare_tables(open_url(source), open_url(destination), "big") == []
