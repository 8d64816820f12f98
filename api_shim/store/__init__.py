"""The shim's own SQL store: only what Prefect has no place for (users, tenants, keys, registries)."""
