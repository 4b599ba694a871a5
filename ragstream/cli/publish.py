"""`ragstream publish PATH --tenant T [--group G ...] [--user U ...] [--wait]`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import typer
from rich.progress import Progress

from ragstream.cli.common import console, emit_json, err, settings
from ragstream.runtime.kafka_admin import ensure_topics
from ragstream.stack.manager import stack_home
from schemas.ingestion import INLINE_CONTENT_MAX_BYTES, Acl

DEFAULT_GROUP = "everyone"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def _publish(path: Path, tenant: str, acl: Acl, wait: bool, timeout_s: float) -> dict[str, object]:
    from producers.folder import diff, load_manifest, manifest_path, save_manifest
    from producers.publisher import DocumentPublisher
    from producers.receipts import ReceiptWatcher
    from ragstream.core.normalize import detect_mime

    s = settings()
    await ensure_topics(s.kafka)
    mpath = manifest_path(stack_home(s).parent, tenant, path)
    changes, current = diff(path, load_manifest(mpath))
    watcher = ReceiptWatcher(s) if wait and changes.total else None
    if watcher:
        await watcher.start()
    sent: dict[str, float] = {}
    try:
        async with DocumentPublisher(s, "ragstream.cli.publish") as pub:
            with Progress(console=err, transient=True) as bar:
                task = bar.add_task("publishing", total=changes.total)
                for entry in [*changes.new, *changes.changed]:
                    raw = entry.path.read_bytes() if entry.size <= INLINE_CONTENT_MAX_BYTES else None
                    ev = await pub.upsert(
                        tenant,
                        entry.rel,
                        content=raw,
                        content_uri=None if raw is not None else entry.path.resolve().as_uri(),
                        mime_type=detect_mime(entry.path.name, raw or entry.path.read_bytes()[:4096]),
                        acl=acl,
                        source_id=entry.path.resolve().as_uri(),
                        source_version=entry.sha256[:16],
                        content_sha256=entry.sha256,
                        size_bytes=entry.size,
                        metadata={"path": entry.rel},
                    )
                    sent[ev.correlation_id] = time.monotonic()
                    bar.advance(task)
                for rel in changes.removed:
                    ev = await pub.delete(tenant, rel)
                    sent[ev.correlation_id] = time.monotonic()
                    bar.advance(task)
        save_manifest(mpath, path, current)
        result: dict[str, object] = {
            "tenant": tenant,
            "new": len(changes.new),
            "changed": len(changes.changed),
            "removed": len(changes.removed),
            "unchanged": changes.unchanged,
            "published": changes.total,
        }
        if watcher:
            lat: list[float] = []
            receipts = await watcher.wait_for(sent, timeout_s, lambda _r, dt: lat.append(dt))
            result.update(
                {
                    "searchable": len(receipts),
                    "waited_for": len(sent),
                    "chunks_written": sum(getattr(r, "chunks_written", 0) for r in receipts.values()),
                    "chunks_deleted": sum(
                        getattr(r, "chunks_deleted", 0) + len(getattr(r, "removed_chunk_ids", ()))
                        for r in receipts.values()
                    ),
                    "freshness_p50_s": round(_percentile(lat, 0.5), 3),
                    "freshness_p95_s": round(_percentile(lat, 0.95), 3),
                    "freshness_max_s": round(max(lat, default=0.0), 3),
                }
            )
        return result
    finally:
        if watcher:
            await watcher.stop()


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
    result = asyncio.run(_publish(path, tenant, acl, wait, timeout))
    if json_out:
        emit_json(result)
        return
    console.print(
        f"[bold]{tenant}[/]: {result['new']} new, {result['changed']} changed, {result['removed']} removed, "
        f"{result['unchanged']} unchanged -> {result['published']} events"
    )
    if "searchable" in result:
        console.print(
            f"searchable {result['searchable']}/{result['waited_for']}; "
            f"chunks written {result['chunks_written']}, deleted {result['chunks_deleted']}; "
            f"freshness p50 {result['freshness_p50_s']}s p95 {result['freshness_p95_s']}s"
        )
    if result.get("searchable", 0) != result.get("waited_for", 0):
        raise typer.Exit(1)
