"""Realistic sample data: a small shop (customers, products, orders) with every supported type.

Used by `make demo`, the benchmarks and the tests. Values are deterministic for a seed.
"""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa

from connectors.base import Column, TableSchema

CUSTOMERS = TableSchema("customers", (
    Column("id", "int64", False), Column("name", "string", False, length=120), Column("email", "string"),
    Column("country", "char", length=2), Column("signed_up", "date"), Column("vip", "bool"),
    Column("external_id", "uuid"), Column("profile", "json"),
), ("id",))
PRODUCTS = TableSchema("products", (
    Column("id", "int32", False), Column("sku", "string", False, length=32), Column("title", "string"),
    Column("price", "decimal", precision=12, scale=2), Column("weight_kg", "float32"), Column("stock", "int16"),
    Column("thumbnail", "binary"),
), ("id",))
ORDERS = TableSchema("orders", (
    Column("id", "int64", False), Column("customer_id", "int64", False), Column("product_id", "int32", False),
    Column("quantity", "int8"), Column("amount", "decimal", precision=12, scale=2), Column("discount", "float64"),
    Column("paid", "bool"), Column("note", "string"), Column("ordered_at", "timestamptz"),
    Column("shipped_at", "timestamp"), Column("updated_at", "timestamp", False), Column("attrs", "json"),
), ("id",))
WORDS = np.array("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike nova oscar "
                 "papa quebec romeo sierra tango ünïcödé 数据 迁移 🚀 'quoted' \"dq\" back\\slash tab\there".split(" "))
EPOCH = dt.datetime(2024, 1, 1)


def _text(rng, n, null_share=0.0, words=3):
    idx = rng.integers(0, len(WORDS), size=(n, words))
    out = pa.array([" ".join(row) for row in WORDS[idx]], pa.string())
    if null_share:
        return pa.array(out.to_pylist(), mask=rng.random(n) < null_share)
    return out


def customers(n: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1)
    return pa.table({
        "id": ids, "name": _text(rng, n, words=2),
        "email": pa.array([f"user{i}@example.com" if i % 7 else None for i in ids]),
        "country": pa.array(rng.choice(["DE", "FR", "IN", "US", "BR", "JP"], n)),
        "signed_up": pa.array((np.datetime64("2015-01-01") + rng.integers(0, 3000, n)).astype("datetime64[D]")),
        "vip": pa.array(rng.random(n) < 0.1),
        "external_id": pa.array([f"{i:08x}-0000-4000-8000-{i * 7919:012x}" for i in ids]),
        "profile": pa.array([json.dumps({"tier": int(i % 3), "tags": ["a", "b"][: i % 3]}) for i in ids]),
    })


def products(n: int, seed: int = 2) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1, dtype=np.int32)
    cents = rng.integers(100, 10_000_000, n)
    return pa.table({
        "id": ids, "sku": pa.array([f"SKU-{i:06d}" for i in ids]), "title": _text(rng, n, words=4),
        "price": _money(cents),
        "weight_kg": pa.array(rng.random(n).astype(np.float32) * 20),
        "stock": pa.array(rng.integers(-10, 30000, n).astype(np.int16)),
        "thumbnail": pa.array([bytes([0, i % 256, 255]) * (i % 4) for i in ids], pa.binary()),
    })


def orders(n: int, n_customers: int, n_products: int, seed: int = 3, start_id: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(start_id, start_id + n, dtype=np.int64)
    micros = rng.integers(0, 365 * 24 * 3600 * 10**6, n)
    ordered = np.datetime64(EPOCH, "us") + micros.astype("timedelta64[us]")
    shipped = ordered + rng.integers(3600 * 10**6, 10 * 24 * 3600 * 10**6, n).astype("timedelta64[us]")
    cents = rng.integers(0, 100_000_00, n)
    return pa.table({
        "id": ids, "customer_id": rng.integers(1, n_customers + 1, n), "product_id": rng.integers(1, n_products + 1, n).astype(np.int32),
        "quantity": rng.integers(1, 100, n).astype(np.int8),
        "amount": _money(cents),
        "discount": pa.array(np.round(rng.random(n) * 0.3, 4)),
        "paid": pa.array(rng.random(n) < 0.8),
        "note": _text(rng, n, null_share=0.3),
        "ordered_at": pa.array(ordered, pa.timestamp("us", "UTC")),
        "shipped_at": pa.array(shipped, mask=rng.random(n) < 0.2),
        "updated_at": pa.array(ordered, pa.timestamp("us")),
        "attrs": pa.array([f'{{"gift": {str(bool(i % 5 == 0)).lower()}, "channel": "{("web", "app", "store")[i % 3]}"}}' for i in ids]),
    })


def _money(cents: np.ndarray) -> pa.Array:
    return pa.array([f"{c // 100}.{c % 100:02d}" for c in cents.tolist()]).cast(pa.decimal128(12, 2))


def build_sqlite_shop(path: str, n_orders: int = 1_000_000, n_customers: int = 50_000, n_products: int = 2_000) -> dict:
    """Create a SQLite shop database at `path` (replacing it); returns row counts."""
    import os
    from connectors import connect
    from connectors.endpoint import Endpoint
    if os.path.exists(path):
        os.remove(path)
    conn = connect(Endpoint(engine="sqlite", path=path))
    conn.conn.execute("PRAGMA journal_mode = OFF")
    conn.conn.execute("PRAGMA synchronous = OFF")
    data = {"customers": (CUSTOMERS, customers(n_customers)), "products": (PRODUCTS, products(n_products)),
            "orders": (ORDERS, orders(n_orders, n_customers, n_products))}
    for schema, table in data.values():
        conn.create_table(schema)
        for batch in table.to_batches(max_chunksize=100_000):
            conn.write_batch(schema, batch)
    conn.close()
    return {name: table.num_rows for name, (_, table) in data.items()}


