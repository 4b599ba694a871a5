"""`ragstream backup create | list | restore ID`: the index and its generation registry, via Weaviate."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from application.cli.common import console, emit_json, err, settings

app = typer.Typer(
    help="Backups of the index (registry included) over Weaviate's backup API.", no_args_is_help=True
)


def _client() -> Any:
    from ragstream.adapters.weaviate_client import connect

    return connect(settings().weaviate)


@app.command()
def create(
    backup_id: str | None = typer.Option(None, "--id", help="Backup id (default: timestamped)"),
) -> None:
    """Back up every kept generation and the registry; waits for success."""
    from ragstream.generations.backup import BackupError
    from ragstream.generations.backup import create as create_backup

    client = _client()
    try:
        emit_json(create_backup(client, settings(), backup_id))
    except BackupError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    finally:
        client.close()


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json")) -> None:
    """Backups on the configured backend, newest first."""
    from ragstream.generations.backup import list_backups

    client = _client()
    try:
        rows = list_backups(client, settings())
    finally:
        client.close()
    if json_out:
        emit_json({"backups": rows})
        return
    table = Table("id", "status", "started", "live generation", "collections")
    for b in rows:
        table.add_row(
            b["backup_id"], b["status"], b["started_at"][:19], b["live"] or "-", str(len(b["collections"]))
        )
    console.print(table)


@app.command()
def restore(
    backup_id: str,
    replace: bool = typer.Option(False, help="Delete this index's existing collections first"),
) -> None:
    """Restore a backup and re-point the live alias to the generation live at backup time."""
    from ragstream.generations.backup import BackupError
    from ragstream.generations.backup import restore as restore_backup

    client = _client()
    try:
        emit_json(restore_backup(client, settings(), backup_id, replace=replace))
    except BackupError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    finally:
        client.close()
