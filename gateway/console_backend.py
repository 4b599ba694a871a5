"""What the console's pages read and the operator actions they take, behind one port.

`ConsoleBackend` is the port (`gateway.console_api` calls nothing else); `LiveConsoleBackend` is the
adapter over the real services: the index's document state (Weaviate), dead letters and their replay
(Kafka), the generation registry and its lifecycle, eval runs on disk. Nothing here filters by caller:
the router authorizes every row (tenant, ACL, group) before it leaves the gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Protocol

from ragstream.adapters.store import WeaviateStore
from ragstream.adapters.weaviate_client import connect
from ragstream.generations.lifecycle import Lifecycle
from ragstream.generations.record import RegistryView
from ragstream.generations.registry import Registry
from ragstream.names import collections
from ragstream.ports import DocumentState
from ragstream.runtime.dlq import read_dead_letters, replay
from ragstream.settings import Settings
from schemas.dlq import DeadLetter

log = logging.getLogger(__name__)


class ConsoleBackend(Protocol):
    async def documents(self, tenant: str, limit: int) -> list[DocumentState]: ...

    async def document_states(self, tenant: str, document_ids: list[str]) -> dict[str, DocumentState]: ...

    async def dead_letters(self) -> list[DeadLetter]: ...

    async def replay(self, dead: DeadLetter) -> None: ...

    async def generations(self) -> RegistryView | None: ...

    async def promote(self, name: str, tenant: str) -> dict[str, Any]: ...

    async def rollback(self, tenant: str) -> dict[str, Any]: ...

    async def eval_runs(self, limit: int) -> list[tuple[Path, dict[str, Any]]]:
        """(run folder, result.json) of stored eval runs, newest first."""
        ...


def read_eval_runs(root: Path, limit: int) -> list[tuple[Path, dict[str, Any]]]:
    """`<root>/<set>/<run id>/result.json`, newest first (run ids start with their UTC time)."""
    if not root.is_dir():
        return []
    found = sorted(root.glob("*/*/result.json"), key=lambda p: p.parent.name, reverse=True)
    out: list[tuple[Path, dict[str, Any]]] = []
    for path in found[:limit]:
        try:
            out.append((path.parent, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            log.warning("eval run %s unreadable: %s", path.parent, exc)
    return out


class LiveConsoleBackend:
    """The real services, connected on first use (a gateway starts without Weaviate reachable)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Any = None
        self._store: WeaviateStore | None = None

    def _connect(self) -> WeaviateStore:
        if self._store is None:
            self._client = connect(self.settings.weaviate)
            self._store = WeaviateStore(self._client, *collections(self.settings.index))
        return self._store

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = self._store = None

    async def documents(self, tenant: str, limit: int) -> list[DocumentState]:
        def read() -> list[DocumentState]:
            store = self._connect()
            return store.list_states(tenant, limit) if store.has_tenant(tenant) else []

        return await asyncio.to_thread(read)

    async def document_states(self, tenant: str, document_ids: list[str]) -> dict[str, DocumentState]:
        def read() -> dict[str, DocumentState]:
            store = self._connect()
            return store.get_states(tenant, document_ids) if store.has_tenant(tenant) else {}

        return await asyncio.to_thread(read)

    async def dead_letters(self) -> list[DeadLetter]:
        return await read_dead_letters(self.settings)

    async def replay(self, dead: DeadLetter) -> None:
        await replay(self.settings, dead)

    def _registry(self) -> Registry:
        self._connect()
        return Registry(self._client, self.settings)

    async def generations(self) -> RegistryView | None:
        def read() -> RegistryView | None:
            reg = self._registry()
            return reg.view() if reg.exists() else None

        return await asyncio.to_thread(read)

    async def promote(self, name: str, tenant: str) -> dict[str, Any]:
        reg = await asyncio.to_thread(self._registry)
        return await Lifecycle(self.settings, reg).promote(name, tenant=tenant)

    async def rollback(self, tenant: str) -> dict[str, Any]:
        reg = await asyncio.to_thread(self._registry)
        return await Lifecycle(self.settings, reg).rollback(tenant=tenant)

    async def eval_runs(self, limit: int) -> list[tuple[Path, dict[str, Any]]]:
        return await asyncio.to_thread(read_eval_runs, self.settings.console.eval_reports_dir, limit)
