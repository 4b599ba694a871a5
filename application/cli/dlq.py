"""`ragstream dlq list | show ID | replay ID`."""

from __future__ import annotations

import asyncio
import base64

import typer
from rich.table import Table

from application.cli.common import console, emit_json, err, settings
from ragstream.runtime.dlq import NotReplayableError, read_dead_letters, replay
from schemas.dlq import DeadLetter

app = typer.Typer(help="Dead letters: what failed, where and why; replay after a fix.", no_args_is_help=True)


def _find(dead_id: str) -> DeadLetter:
    matches = [d for d in asyncio.run(read_dead_letters(settings())) if d.dead_letter_id.startswith(dead_id)]
    if len(matches) != 1:
        err.print(f"{len(matches)} dead letters match {dead_id!r}")
        raise typer.Exit(1)
    return matches[0]


@app.command("list")
def list_(
    stage: str | None = typer.Option(None, help="Only this stage"),
    tenant: str | None = typer.Option(None, help="Only this tenant"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Every retained dead letter."""
    rows = [
        d
        for d in asyncio.run(read_dead_letters(settings()))
        if (stage is None or d.stage == stage) and (tenant is None or d.tenant_id == tenant)
    ]
    if json_out:
        emit_json(
            {
                "count": len(rows),
                "dead_letters": [d.model_dump(mode="json", exclude={"raw_b64"}) for d in rows],
            }
        )
        return
    table = Table("id", "stage", "reason", "tenant", "origin", "failed at", "message")
    for d in rows:
        table.add_row(
            d.dead_letter_id[:8],
            d.stage,
            d.reason,
            d.tenant_id or "-",
            f"{d.original_topic}[{d.original_partition}]@{d.original_offset}",
            d.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            d.message[:60],
        )
    console.print(table)
    console.print(f"{len(rows)} dead letters")


@app.command()
def show(dead_id: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """One dead letter in full (raw bytes previewed)."""
    d = _find(dead_id)
    if json_out:
        emit_json(d.model_dump(mode="json"))
        return
    for k, v in d.model_dump(mode="json", exclude={"raw_b64"}).items():
        console.print(f"[bold]{k}[/]: {v}", highlight=False)
    raw = base64.b64decode(d.raw_b64)
    kept = f"{len(raw)} of {d.raw_length} bytes kept" if d.raw_truncated else f"{len(raw)} bytes"
    console.print(f"[bold]raw[/] ({kept}): {raw[:300]!r}", highlight=False)


@app.command("replay")
def replay_(dead_id: str) -> None:
    """Send the original bytes back to the original topic and partition."""
    d = _find(dead_id)
    try:
        asyncio.run(replay(settings(), d))
    except NotReplayableError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"replayed {d.dead_letter_id} to {d.original_topic}[{d.original_partition}]")
