"""The `migration-assistant` command line."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import typer

from connectors.base import MigrationError
from migration_assistant.webhooks_cli import app as webhooks_app

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Move tables between databases as verified, reversible Prefect flows.")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def print_report(report: dict) -> None:
    cols = ["table", "rows", "deleted", "bytes", "seconds", "rows_per_s", "checksum", "verdict"]
    rows = [[str(t[c]) for c in cols] for t in report["tables"]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) if i in (1, 2, 3, 4, 5) else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    typer.echo(line(cols))
    for r in rows:
        typer.echo(line(r))
    typer.echo(f"run {report['run_id']}: {report['rows']:,} rows in {report['seconds']:.1f} s, {report['verdict']}")


@app.command()
def run(config: Path = typer.Argument(..., help="Migration YAML (source, destination, tables, mode, ...)"),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON")):
    """Run the migration a YAML file describes."""
    from migration_assistant.config import load_config
    try:
        cfg = load_config(config)
        from flows.migrate_tables import migrate_tables
        report = migrate_tables(**cfg.flow_parameters())
    except MigrationError as exc:
        _fail(exc)
    typer.echo(json.dumps(report, indent=2, default=str)) if as_json else print_report(report)


@app.command("test-connection")
def test_connection(endpoint: str = typer.Argument(..., help="Block name, env:VAR, or URL without password"),
                    write: bool = typer.Option(False, help="Also check the right to create tables")):
    """Check that an endpoint answers and the credentials work; list its tables."""
    import connectors
    from blocks.resolve import resolve_endpoint
    try:
        ep = resolve_endpoint(endpoint)
        started = time.perf_counter()
        conn = connectors.connect(ep)
        conn.check_access(write=write)
        tables = conn.list_tables()
        conn.close()
    except MigrationError as exc:
        _fail(exc)
    typer.echo(f"ok: {ep.label} ({ep.engine}) answered in {1000 * (time.perf_counter() - started):.0f} ms; "
               f"{len(tables)} table(s): {', '.join(tables[:20])}")


@app.command()
def rollback(destination: str = typer.Argument(...), run_id: str = typer.Argument(...)):
    """Return the destination to its state before a finished run."""
    from flows.rollback import rollback_migration
    try:
        restored = rollback_migration(destination=destination, run_id=run_id)
    except MigrationError as exc:
        _fail(exc)
    typer.echo(f"rolled back run {run_id}: restored {', '.join(restored)}")


@app.command()
def verify(source: str, destination: str, table: str, dest_table: str = typer.Option(None)):
    """Compare a table on both sides chunk by chunk, naming the rows that differ."""
    import connectors
    from blocks.resolve import resolve_endpoint
    from tasks.verify import compare_tables
    try:
        s, d = connectors.connect(resolve_endpoint(source)), connectors.connect(resolve_endpoint(destination))
        problems = compare_tables(s, d, table, dest_table)
    except MigrationError as exc:
        _fail(exc)
    for p in problems:
        typer.secho(p, fg=typer.colors.RED)
    typer.echo("equal" if not problems else f"{len(problems)} chunk(s) differ")
    raise typer.Exit(code=1 if problems else 0)


app.add_typer(webhooks_app, name="webhooks")
blocks_app = typer.Typer(help="Endpoint blocks: credentials live in Prefect, flows name them.")
app.add_typer(blocks_app, name="blocks")


@blocks_app.command("save")
def blocks_save(file: Path = typer.Argument(..., help="YAML of endpoints; passwords come from environment variables")):
    """Save endpoint blocks (sqlalchemy-connector / clickhouse-endpoint) from a YAML file."""
    from blocks.save import save_endpoint_blocks
    try:
        saved = save_endpoint_blocks(file)
    except MigrationError as exc:
        _fail(exc)
    for ref in saved:
        typer.echo(f"saved {ref}")


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)"),
          port: int = typer.Option(8000, help="TCP port"),
          workers: int = typer.Option(1, help="Server processes (rate limits are counted per process)"),
          auth_enabled: bool = typer.Option(False, "--auth-enabled", help="Require a token or API key"),
          jwt_secret: str = typer.Option(None, envvar="MA_JWT_SECRET", show_default=False,
                                         help="Token signing secret (required with --auth-enabled outside development)"),
          store_url: str = typer.Option(None, envvar="MA_STORE_URL", help="The API's own store (default SQLite)")):
    """Serve the REST API (Migration Assistant, Jarvis and Schema Orchestrator contracts) on Prefect."""
    import os

    import uvicorn

    from api_shim.settings import ConfigurationError, get_settings
    os.environ["MA_AUTH_ENABLED"] = "true" if auth_enabled else "false"
    if jwt_secret:
        os.environ["MA_JWT_SECRET"] = jwt_secret
    if store_url:
        os.environ["MA_STORE_URL"] = store_url
    get_settings.cache_clear()
    try:
        get_settings()
    except ConfigurationError as exc:
        _fail(exc)
    uvicorn.run("api_shim.app:create_app", factory=True, host=host, port=port, workers=workers)


@app.command()
def demo(workdir: Path = typer.Option(Path(".state/demo"), help="Where the demo databases go"),
         orders: int = typer.Option(1_000_000, help="Rows in the orders table")):
    """Build a SQLite shop, migrate it into embedded ClickHouse, verify, print the report."""
    from migration_assistant.local_prefect import start_temporary_server_early
    from migration_assistant.sample_data import build_sqlite_shop
    from flows.migrate_tables import migrate_tables
    import shutil
    workdir.mkdir(parents=True, exist_ok=True)
    source, target = workdir / "shop.sqlite", workdir / "warehouse.chdb"
    started = time.perf_counter()
    prefect_ready = start_temporary_server_early()  # while the shop is built
    counts = build_sqlite_shop(str(source), n_orders=orders)
    typer.echo(f"built {source}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
               + f" rows in {time.perf_counter() - started:.1f} s")
    shutil.rmtree(target, ignore_errors=True)
    prefect_ready()
    report = migrate_tables(source=f"sqlite:///{source.resolve()}", destination=f"chdb://{target.resolve()}",
                            chunk_rows=250_000, parallel=2)
    print_report(report)
    typer.echo(f"demo finished in {time.perf_counter() - started:.1f} s; ClickHouse data in {target}")


def main() -> None:  # pragma: no cover
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    app()


if __name__ == "__main__":
    sys.exit(main())
