"""Publish a folder's changes (new, changed, ACL-changed, removed files); optionally wait until applied."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from producers.folder import diff, load_manifest, manifest_path, save_manifest
from producers.publisher import DocumentPublisher
from producers.receipts import ReceiptWatcher
from producers.staging import stage_content
from ragstream.core.normalize import detect_mime
from ragstream.core.stats import percentile
from ragstream.runtime.kafka_admin import ensure_topics
from ragstream.settings import Settings
from schemas.ingestion import INLINE_CONTENT_MAX_BYTES, Acl


async def publish_folder(
    s: Settings,
    path: Path,
    tenant: str,
    acl: Acl,
    *,
    wait: bool,
    timeout_s: float,
    state_dir: Path,
    progress_console: Console | None = None,
) -> dict[str, object]:
    """Publish the difference since the last publish of `path`; with `wait`, follow the receipts."""
    await ensure_topics(s.kafka)
    mpath = manifest_path(state_dir, tenant, path)
    changes, current = diff(path, load_manifest(mpath), acl)
    watcher = ReceiptWatcher(s) if wait and changes.total else None
    if watcher:
        await watcher.start()
    sent: dict[str, float] = {}
    try:
        async with DocumentPublisher(s, "ragstream.cli.publish") as pub:
            with Progress(console=progress_console, transient=True, disable=progress_console is None) as bar:
                task = bar.add_task("publishing", total=changes.total)
                for entry in [*changes.new, *changes.changed]:
                    raw = entry.path.read_bytes() if entry.size <= INLINE_CONTENT_MAX_BYTES else None
                    ev = await pub.upsert(
                        tenant,
                        entry.rel,
                        content=raw,
                        content_uri=None
                        if raw is not None
                        else stage_content(s, tenant, entry.path, entry.sha256),
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
                for entry in changes.acl_changed:
                    # Same content, new readers: the ACL is rewritten on the live chunks, no re-embedding.
                    ev = await pub.acl_change(tenant, entry.rel, acl)
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
            "acl_changed": len(changes.acl_changed),
            "unchanged": changes.unchanged,
            "published": changes.total,
        }
        if watcher:
            receipts = await watcher.wait_for(sent, timeout_s)
            # Publish -> indexed from the events' own timestamps, not from when this loop read the receipt.
            lat = [
                (r.occurred_at - r.source_occurred_at).total_seconds()
                for r in receipts.values()
                if r.source_occurred_at is not None
            ]
            result.update(
                {
                    "searchable": len(receipts),
                    "waited_for": len(sent),
                    "chunks_written": sum(getattr(r, "chunks_written", 0) for r in receipts.values()),
                    "acl_applied": sum(bool(getattr(r, "acl_only", False)) for r in receipts.values()),
                    "chunks_deleted": sum(
                        getattr(r, "chunks_deleted", 0) + len(getattr(r, "removed_chunk_ids", ()))
                        for r in receipts.values()
                    ),
                    "freshness_p50_s": round(percentile(lat, 50), 3),
                    "freshness_p95_s": round(percentile(lat, 95), 3),
                    "freshness_max_s": round(max(lat, default=0.0), 3),
                }
            )
        return result
    finally:
        if watcher:
            await watcher.stop()
