"""Backups of the index over Weaviate's backup API, the generation registry included.

`create` first appends a `backup` event to the registry (which collections, where the live alias points,
which tenants are pinned), then backs up every kept generation's collections and the registry collection in
one Weaviate backup. `restore` restores them and re-points the live alias from that event, so readers come
back on the generation that was live at backup time. Backends: the local `backup-filesystem` module, or
`backup-s3` / `backup-gcs` / `backup-azure` in production (`generations.backup_backend`).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import weaviate
from weaviate.backup.backup import BackupStorage

from ragstream import names
from ragstream.generations.record import GenerationEvent
from ragstream.generations.registry import Registry
from ragstream.indexing.builder import builder_group
from ragstream.runtime.kafka_admin import group_id
from ragstream.settings import Settings
from schemas.envelope import utcnow
from schemas.topics import SOURCE_CHANGES

_ID = re.compile(r"^[a-z0-9_-]+$")


class BackupError(RuntimeError):
    pass


def backend(settings: Settings) -> BackupStorage:
    return BackupStorage(settings.generations.backup_backend)


def index_collections(client: weaviate.WeaviateClient, settings: Settings) -> list[str]:
    """This index's collections that exist: every kept generation, the configured one, and the registry."""
    reg = Registry(client, settings)
    view = reg.view()
    wanted = set(names.collections(settings.index))
    for st in view.generations.values():
        if st.retired_at is None:
            wanted |= {st.record.chunks_collection, st.record.documents_collection}
    if reg.exists():
        wanted.add(reg.name)
    return sorted(c for c in wanted if client.collections.exists(c))


def source_positions(settings: Settings, groups: list[str], timeout_s: float = 10.0) -> dict[str, Any]:
    """End offsets of the source topic and the committed offsets of `groups` (empty if Kafka is away)."""
    from ragstream.generations.build import committed_offsets, end_offsets

    async def read() -> dict[str, Any]:
        out: dict[str, Any] = {"topic": SOURCE_CHANGES.name, "end": await end_offsets(settings.kafka)}
        out["groups"] = {g: await committed_offsets(settings.kafka, g) for g in groups}
        return out

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(read(), timeout_s)

    try:
        return asyncio.run(bounded())
    except Exception:  # a backup of Weaviate must not depend on Kafka being reachable
        return {}


def create(
    client: weaviate.WeaviateClient, settings: Settings, backup_id: str | None = None
) -> dict[str, Any]:
    """Back up this index (registry included); waits until Weaviate reports success."""
    backup_id = backup_id or f"ragstream-{utcnow():%Y%m%d-%H%M%S}"
    if not _ID.match(backup_id):
        raise BackupError("a backup id is lowercase letters, digits, '-' and '_'")
    reg = Registry(client, settings)
    reg.ensure()
    collections = index_collections(client, settings)
    view = reg.view()
    groups = [group_id(settings.kafka, "normalizer")] + [
        builder_group(n)
        for n, st in view.generations.items()
        if st.retired_at is None and st.record.spec.source
    ]
    manifest = {
        "backup_id": backup_id,
        "backend": settings.generations.backup_backend,
        "collections": collections,
        "alias": {reg.alias: reg.alias_target()},
        "live": view.live,
        "tenants": {t: s[-1] for t, s in view.tenant_history.items() if s},
        # Where ingestion stood: after a restore, rewind these groups here to re-apply later changes.
        "source_offsets": source_positions(settings, groups),
    }
    reg.append(GenerationEvent.new(view.live or settings.index.generation, "backup", data=manifest))
    result = client.backup.create(
        backup_id=backup_id,
        backend=backend(settings),
        include_collections=collections,
        wait_for_completion=True,
    )
    status = str(getattr(result.status, "value", result.status))
    if status != "SUCCESS":
        raise BackupError(f"backup {backup_id}: {status} {getattr(result, 'error', '')}")
    return {**manifest, "status": status, "path": getattr(result, "path", None)}


def list_backups(client: weaviate.WeaviateClient, settings: Settings) -> list[dict[str, Any]]:
    """Backups the backend holds (newest first), with what the registry recorded about each."""
    reg = Registry(client, settings)
    recorded = {b["backup_id"]: b for b in reg.view().backups} if reg.exists() else {}
    out: list[dict[str, Any]] = []
    for b in client.backup.list_backups(backend=backend(settings)) or []:
        bid = getattr(b, "backup_id", None) or getattr(b, "id", "")
        out.append(
            {
                "backup_id": bid,
                "status": str(getattr(getattr(b, "status", ""), "value", getattr(b, "status", ""))),
                "collections": list(getattr(b, "collections", None) or []),
                "started_at": str(getattr(b, "started_at", "") or ""),
                "live": recorded.get(bid, {}).get("live"),
            }
        )
    out.sort(key=lambda b: b["started_at"], reverse=True)
    return out


def restore(
    client: weaviate.WeaviateClient, settings: Settings, backup_id: str, *, replace: bool = False
) -> dict[str, Any]:
    """Restore a backup; with `replace`, this index's existing collections in it are deleted first."""
    reg = Registry(client, settings)
    meta = client.backup.get_create_status(backup_id=backup_id, backend=backend(settings))
    status = str(getattr(meta.status, "value", meta.status))
    if status != "SUCCESS":
        raise BackupError(f"backup {backup_id} is {status}, not restorable")
    existing = [c for c in index_collections(client, settings) if c]
    if existing:
        if not replace:
            raise BackupError(
                f"collections exist: {', '.join(existing)}; restore into an empty Weaviate, or --replace"
            )
        if reg.alias_target() is not None:
            client.alias.delete(alias_name=reg.alias)
        for c in existing:
            client.collections.delete(c)
    result = client.backup.restore(
        backup_id=backup_id, backend=backend(settings), wait_for_completion=True, overwrite_alias=True
    )
    status = str(getattr(result.status, "value", result.status))
    if status != "SUCCESS":
        raise BackupError(f"restore {backup_id}: {status} {getattr(result, 'error', '')}")
    view = reg.view()
    manifest = next((b for b in reversed(view.backups) if b.get("backup_id") == backup_id), None)
    target = (manifest or {}).get("alias", {}).get(reg.alias)
    if target and client.collections.exists(target):
        reg.point_alias(target)
    return {
        "restored": backup_id,
        "status": status,
        "collections": list(getattr(result, "collections", None) or (manifest or {}).get("collections", [])),
        "alias": {reg.alias: reg.alias_target()},
    }
