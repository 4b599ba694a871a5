"""An isolated pipeline for one test: own topic prefix, own index generation (own Weaviate collections)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from application.pipeline import LocalPipeline
from producers.folder_publish import publish_folder
from ragstream.adapters.store import WeaviateStore, drop_index
from ragstream.adapters.weaviate_client import connect
from ragstream.names import collections
from ragstream.runtime.deps import Deps
from ragstream.settings import Settings
from schemas.ingestion import Acl
from tests.support.kafka import create_topics, isolated

__all__ = ["Harness", "document_indexed", "drop_index", "eventually", "isolated_pipeline_settings"]


def isolated_pipeline_settings(settings: Settings, unique: str, **changes: Any) -> Settings:
    index = settings.index.model_copy(update={"generation": f"t{unique}"})
    return isolated(settings, unique, partitions=2, index=index, **changes)


def document_indexed(h: Harness, tenant: str, doc: str) -> bool:
    """The document's state is written (its tenant may not exist in either collection yet)."""
    try:
        return h.store.has_tenant(tenant) and h.store.get_state(tenant, doc) is not None
    except Exception:
        return False


class Harness:
    def __init__(
        self,
        settings: Settings,
        embedder: Any,
        names: tuple[str, ...],
        deps: Deps | None = None,
        tmp: Path | None = None,
    ) -> None:
        self.settings = settings
        self.tmp = tmp
        self.pipeline = LocalPipeline(settings, names, replace(deps or Deps(settings), embedder=embedder))
        self.client = connect(settings.weaviate)
        self.store = WeaviateStore(self.client, *collections(settings.index))

    async def __aenter__(self) -> Harness:
        await create_topics(self.settings.kafka)
        await self.pipeline.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pipeline.stop()
        drop_index(self.settings)
        self.client.close()

    async def publish(
        self,
        folder: Path,
        tenant: str,
        groups: tuple[str, ...] = ("everyone",),
        wait: bool = True,
        timeout_s: float = 300,
    ) -> dict[str, Any]:
        assert self.tmp is not None
        return await publish_folder(
            self.settings,
            folder,
            tenant,
            Acl(groups=groups),
            wait=wait,
            timeout_s=timeout_s,
            state_dir=self.tmp / "state",
        )

    def chunk_ids(self, tenant: str) -> set[str]:
        return {c["chunk_id"] for c in self.store.iter_chunks(tenant)}


async def eventually(check: Callable[[], Any], timeout_s: float = 60.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s: {check}")
        await asyncio.sleep(interval)
