"""`ragstream publish PATH --tenant T [--group G ...] [--user U ...] [--wait]`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from application.cli.common import console, emit_json, err, settings
from application.stack.manager import stack_home
from schemas.ingestion import Acl

DEFAULT_GROUP = "everyone"


def publish(
    path: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder to publish"),
    tenant: str = typer.Option(..., "--tenant", help="Tenant id"),
    group: list[str] = typer.Option([], "--group", help="Groups that may read (default: everyone)"),
    user: list[str] = typer.Option([], "--user", help="Principals that may read"),
    wait: bool = typer.Option(False, "--wait", help="Return when every change is searchable"),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds to wait with --wait"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Publish the new, changed and removed files of a folder since its last publish."""
    acl = Acl(principals=tuple(user), groups=tuple(group) or (() if user else (DEFAULT_GROUP,)))
    from producers.folder_publish import publish_folder

    s = settings()
    result = asyncio.run(
        publish_folder(
            s,
            path,
            tenant,
            acl,
            wait=wait,
            timeout_s=timeout,
            state_dir=stack_home(s).parent,
            progress_console=err,
        )
    )
    if json_out:
        emit_json(result)
        return
    console.print(
        f"[bold]{tenant}[/]: {result['new']} new, {result['changed']} changed, "
        f"{result['acl_changed']} acl changed, {result['removed']} removed, "
        f"{result['unchanged']} unchanged -> {result['published']} events"
    )
    if "searchable" in result:
        console.print(
            f"searchable {result['searchable']}/{result['waited_for']}; "
            f"chunks written {result['chunks_written']}, deleted {result['chunks_deleted']}, "
            f"acl applied {result['acl_applied']}; "
            f"freshness p50 {result['freshness_p50_s']}s p95 {result['freshness_p95_s']}s"
        )
    if result.get("searchable", 0) != result.get("waited_for", 0):
        raise typer.Exit(1)
