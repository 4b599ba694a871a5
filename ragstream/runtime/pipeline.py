"""Run several consumers in one process (the local demo, tests and benchmarks).

In production each consumer is its own Deployment; locally one process hosts them all, each still with
its own consumer group, worker loop and producer, so behaviour is the same as over the network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from ragstream.runtime.app import build
from ragstream.runtime.kafka_admin import ensure_topics, group_id
from ragstream.runtime.worker import Producer, Worker
from ragstream.settings import Settings
from schemas.topics import CONSUMERS, output_compression

INGESTION = ("normalizer", "chunker", "embedder")
SERVING = ("retrieval", "rerank", "generation")


class LocalPipeline:
    def __init__(
        self,
        settings: Settings,
        names: Sequence[str] = INGESTION + SERVING,
        overrides: dict[str, dict[str, Any]] | None = None,
        group_suffix: str = "",
    ) -> None:
        self.settings = settings
        self.names = list(names)
        self.overrides = overrides or {}
        self.group_suffix = group_suffix
        self.workers: dict[str, Worker] = {}
        self.components: dict[str, Any] = {}
        self._extras: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> LocalPipeline:
        await ensure_topics(self.settings.kafka)
        shared: dict[str, Any] = {}
        if {"embedder", "retrieval"} & set(self.names) and "embedder" not in self.overrides.get("*", {}):
            from ragstream.adapters.embedder import SentenceTransformerEmbedder

            # One model in memory for both consumers that need it.
            shared["embedder"] = SentenceTransformerEmbedder(
                self.settings.embedding, self.settings.index.embedding_batch_size
            )
        for name in self.names:
            producer = Producer(self.settings, output_compression(CONSUMERS[name]))
            opts = {**shared, **self.overrides.get("*", {}), **self.overrides.get(name, {})}
            handler, extras = await asyncio.to_thread(build, name, self.settings, producer, **opts)
            self._extras.append(extras)
            if "component" in extras:
                self.components[name] = extras["component"]
            spec = CONSUMERS[name]
            worker = Worker(
                spec,
                handler,
                self.settings,
                group=group_id(self.settings.kafka, name, self.group_suffix),
                max_batch=self.settings.index.consumer_batch_max,
                producer=producer,
            )
            await worker.start()
            self.workers[name] = worker
        self._tasks = [asyncio.create_task(w.run(), name=f"worker-{n}") for n, w in self.workers.items()]
        return self

    async def stop(self) -> None:
        # Let each worker finish (or abandon, uncommitted) the batch in hand before its clients close.
        for w in self.workers.values():
            w.request_stop()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)
        for w in self.workers.values():
            await w.stop()
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for extras in self._extras:
            if "close" in extras:
                extras["close"]()

    async def __aenter__(self) -> LocalPipeline:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
