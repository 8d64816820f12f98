"""`migration-assistant webhooks ...`: webhook subscriptions as Prefect automations.

Mounted in migration_assistant/cli.py with:
    from migration_assistant.webhooks_cli import app as webhooks_app
    app.add_typer(webhooks_app, name="webhooks")
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Webhook subscriptions (POST on run events, HMAC-signed) as Prefect automations.")


@app.command()
def apply(path: Path = typer.Argument(..., help="Subscription YAML (see deployments/webhooks.example.yaml)"),
          as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON")):
    """Create, update or delete the ma-webhook automations and blocks so Prefect matches the file."""
    from deployments.webhooks import WebhookConfigError, apply_webhooks
    try:
        summary = apply_webhooks(path)
    except WebhookConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2)
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), indent=2))
        return
    for verb, items in (("created", summary.created), ("updated", summary.updated), ("deleted", summary.deleted)):
        for item in items:
            typer.echo(f"{verb:9} {item}")
    typer.echo(f"{path}: {summary}" + ("" if summary.changed else " (nothing to do)"))


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON")):
    """List the webhook automations this tool manages (no URLs or secrets are shown)."""
    from deployments.webhooks import list_webhooks
    rows = list_webhooks()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no webhook subscriptions")
        return
    cols = ["name", "id", "enabled", "events", "flows", "signed"]
    cells = [[r["name"], r["id"], str(r["enabled"]).lower(), ",".join(r["events"]),
              r["flows"] if isinstance(r["flows"], str) else ",".join(r["flows"]), "yes" if r["signed"] else "no"]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    typer.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for row in cells:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)))
