"""Run several consumers in one process (the local demo, tests and benchmarks).

In production each consumer is its own Deployment; locally one process hosts them all, each still with
its own consumer group, worker loop and producer, so behaviour is the same as over the network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from application.compose import MODULES, Wired, shared_embedder, wire, worker_for
from ragstream.runtime.deps import Deps
from ragstream.runtime.kafka_admin import ensure_topics, group_id
from ragstream.runtime.worker import Producer, Worker
from ragstream.settings import Settings
from schemas.topics import CONSUMERS, INGESTION, SERVING, output_compression

__all__ = ["INGESTION", "SERVING", "LocalPipeline"]


class LocalPipeline:
    def __init__(
        self,
        settings: Settings,
        names: Sequence[str] = INGESTION + SERVING,
        deps: Deps | None = None,
        group_suffix: str = "",
    ) -> None:
        self.settings = settings
        self.names = list(names)
        # The pipeline's settings win: a base built for other settings is re-pointed, its adapters kept.
        self.deps = replace(deps, settings=settings) if deps is not None else Deps(settings)
        self.group_suffix = group_suffix
        self.workers: dict[str, Worker] = {}
        self.wired: dict[str, Wired] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def components(self) -> dict[str, Any]:
        """The serving stages built from the same adapters (the in-process side of `bench.query`)."""
        return {
            n: MODULES[n].component(w.deps) for n, w in self.wired.items() if hasattr(MODULES[n], "component")
        }

    async def start(self) -> LocalPipeline:
        await ensure_topics(self.settings.kafka)
        base = self.deps
        if {"embedder", "retrieval"} & set(self.names) and base.embedder is None:
            # One model in memory for both consumers that need it.
            base = replace(base, embedder=await asyncio.to_thread(shared_embedder, self.settings))
        for name in self.names:
            producer = Producer(self.settings, output_compression(CONSUMERS[name]))
            wired = await asyncio.to_thread(wire, name, base, producer)
            self.wired[name] = wired
            worker = worker_for(wired, producer, group_id(self.settings.kafka, name, self.group_suffix))
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
        for wired in self.wired.values():
            wired.close()

    async def __aenter__(self) -> LocalPipeline:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
