"""Building a generation: snapshot the source topic, write the record, replay into new collections.

The build runs the builder consumer (its own group) beside the live pipeline, which keeps ingesting into
the live generation. It is ready when the group's lag on the source topic reaches zero; the ready event
records the offsets it reached and what it did (documents, chunks, tokens, seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ragstream import names
from ragstream.adapters.embedding.compat import backend_info
from ragstream.adapters.store import WeaviateStore
from ragstream.core.chunk import ChunkingPolicy
from ragstream.core.normalize import NORMALIZER_VERSION
from ragstream.core.tokenizer import Tokenizer
from ragstream.generations.record import (
    EmbeddingBackendInfo,
    GenerationEvent,
    GenerationRecord,
    GenerationSpec,
    SourceSnapshot,
    default_name,
)
from ragstream.generations.registry import Registry
from ragstream.indexing.builder import (
    BuildCounters,
    TimedEmbedder,
    build_handler,
    builder_group,
    builder_spec,
)
from ragstream.indexing.indexer import Indexer
from ragstream.ports import ChunkStore, Embedder
from ragstream.runtime.deps import chunking_policy
from ragstream.runtime.kafka_admin import ensure_topics
from ragstream.runtime.limits import Limits
from ragstream.runtime.offsets import LagReader
from ragstream.runtime.worker import Worker
from ragstream.settings import KafkaSettings, Settings
from schemas.envelope import utcnow
from schemas.topics import SOURCE_CHANGES

log = logging.getLogger(__name__)
Progress = Callable[[dict[str, Any]], None]


async def end_offsets(kafka: KafkaSettings, topic: str = SOURCE_CHANGES.name) -> dict[int, int]:
    """partition -> end offset of `topic` (prefix applied)."""
    async with LagReader(kafka) as reader:
        return await reader.end_offsets(kafka.topic_prefix + topic)


async def committed_offsets(
    kafka: KafkaSettings, group: str, topic: str = SOURCE_CHANGES.name
) -> dict[int, int]:
    """partition -> committed offset of `group` on `topic` (prefix applied), where it committed."""
    async with LagReader(kafka) as reader:
        return (await reader.offsets(group, kafka.topic_prefix + topic)).committed


async def group_lag(kafka: KafkaSettings, group: str) -> tuple[int, dict[int, int]]:
    """Total lag of `group` on the source topic now, and the committed offsets."""
    async with LagReader(kafka) as reader:
        found = await reader.offsets(group, kafka.topic_prefix + SOURCE_CHANGES.name)
    return found.lag(), found.committed


class LagProbe:
    """A group's lag on the source topic, with its clients kept open (polled every `lag_poll_s`)."""

    def __init__(self, kafka: KafkaSettings, group: str) -> None:
        self.kafka = kafka
        self.group = group
        self.topic = kafka.topic_prefix + SOURCE_CHANGES.name
        self._reader = LagReader(kafka)

    async def start(self) -> None:
        await self._reader.start()
        await self._reader.partitions(self.topic)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._reader.stop()

    async def lag(self) -> tuple[int, dict[int, int]]:
        found = await self._reader.offsets(self.group, self.topic)
        return found.lag(), found.committed


async def snapshot(kafka: KafkaSettings) -> SourceSnapshot:
    return SourceSnapshot(topic=SOURCE_CHANGES.name, offsets=await end_offsets(kafka))


def make_record(
    settings: Settings,
    *,
    source: SourceSnapshot | None,
    policy: ChunkingPolicy,
    embedder: Embedder,
    parent: str | None,
    name: str | None = None,
    normalizer_version: str = NORMALIZER_VERSION,
) -> GenerationRecord:
    spec = GenerationSpec(
        index=settings.index.chunks_collection_prefix,
        source=source,
        normalizer_version=normalizer_version,
        chunking_policy=policy.model_dump(mode="json"),
        policy_hash=policy.policy_hash,
        embedding_model=embedder.model_id,
        embedding_revision=embedder.revision,
        embedding_dimensions=int(getattr(embedder, "dimensions", 0) or 0),
        parent=parent,
    )
    gid = spec.content_id()
    gen = name or default_name(gid)
    return GenerationRecord(
        generation_id=gid,
        name=gen,
        spec=spec,
        chunks_collection=names.chunks_collection(settings.index, gen),
        documents_collection=names.documents_collection(settings.index, gen),
        created_at=utcnow(),
        embedding_backend=EmbeddingBackendInfo.model_validate(backend_info(embedder)),
    )


def adopt_live(registry: Registry, settings: Settings, embedder: Embedder) -> str:
    """Take the configured (pre-registry) generation under management as the live one; idempotent.

    Its record has no source snapshot (it was built by the live pipeline over time). The live alias is
    created pointing at it, so readers follow the alias from now on.
    """
    view = registry.view()
    gen = settings.index.generation
    if not view.managed(gen):
        record = make_record(
            settings,
            source=None,
            policy=chunking_policy(settings),
            embedder=embedder,
            parent=None,
            name=gen,
        )
        store = WeaviateStore(registry.client, record.chunks_collection, record.documents_collection)
        store.ensure_schema()
        registry.put_record(record)
        registry.append(GenerationEvent.new(gen, "ready", data={"adopted": True}))
        registry.append(GenerationEvent.new(gen, "adopted"))
        view = registry.view()
    if registry.alias_target() is None and view.live is not None:
        registry.point_alias(view.generations[view.live].record.chunks_collection)
    return view.live or gen


@dataclass
class BuildResult:
    record: GenerationRecord
    ready: bool
    seconds: float
    lag: int
    counters: BuildCounters
    cpu_seconds: float = 0.0  # process CPU time from start to ready (every thread of this process)

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.record.name,
            "generation_id": self.record.generation_id,
            "collection": self.record.chunks_collection,
            "ready": self.ready,
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "lag": self.lag,
            "documents": len(self.counters.documents),
            **self.counters.to_json(),
        }


class Build:
    """One candidate's builder: start it, wait for lag zero, keep following while asked."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        record: GenerationRecord,
        embedder: Embedder,
        tokenizer: Tokenizer,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.record = record
        self.policy = ChunkingPolicy.model_validate(record.spec.chunking_policy)
        self.store: ChunkStore = WeaviateStore(
            registry.client, record.chunks_collection, record.documents_collection
        )
        self.counters = BuildCounters()
        indexer = Indexer(self.store, TimedEmbedder(embedder, self.counters), record.name)
        handler = build_handler(
            indexer,
            self.policy,
            tokenizer,
            Limits.of(settings).document_bytes,
            self.counters,
            settings.ingest.content_roots,
        )
        self.group = builder_group(record.name)
        self.worker = Worker(
            builder_spec(record.name),
            handler,
            settings,
            group=self.group,
            max_batch=settings.index.consumer_batch_max,
        )
        self._task: asyncio.Task[None] | None = None
        self.started_at = 0.0
        self.started_cpu = 0.0

    async def start(self) -> Build:
        await ensure_topics(self.settings.kafka)
        await asyncio.to_thread(self.store.ensure_schema)
        await self.worker.start()
        self.started_at, self.started_cpu = time.perf_counter(), time.process_time()
        self._task = asyncio.create_task(self.worker.run(), name=f"build-{self.record.name}")
        return self

    async def lag(self) -> int:
        lag, _ = await group_lag(self.settings.kafka, self.group)
        return lag

    async def wait_ready(
        self, timeout_s: float | None = None, progress: Progress | None = None
    ) -> BuildResult:
        """Poll the group's lag until zero; then append the ready event (once per generation)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        poll = self.settings.generations.lag_poll_s
        probe = LagProbe(self.settings.kafka, self.group)
        await probe.start()
        try:
            while True:
                if self._task is not None and self._task.done():
                    self._task.result()  # the worker died: raise its error
                lag, offsets = await probe.lag()
                if progress is not None:
                    progress({"generation": self.record.name, "lag": lag, **self.counters.to_json()})
                if lag == 0:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    return self._result(False, lag)
                await asyncio.sleep(poll)
        finally:
            await probe.stop()
        result = self._result(True, 0)
        view = await asyncio.to_thread(self.registry.view)
        if view.generations[self.record.name].ready_at is None:
            await asyncio.to_thread(
                self.registry.append,
                GenerationEvent.new(self.record.name, "ready", data={**result.to_json(), "offsets": offsets}),
            )
        return result

    def _result(self, ready: bool, lag: int) -> BuildResult:
        return BuildResult(
            self.record,
            ready,
            time.perf_counter() - self.started_at,
            lag,
            self.counters,
            time.process_time() - self.started_cpu,
        )

    async def stop(self) -> None:
        await self.worker.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def __aenter__(self) -> Build:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_build(
    settings: Settings,
    registry: Registry,
    *,
    policy: ChunkingPolicy,
    embedder: Embedder,
    tokenizer: Tokenizer,
    live_embedder: Embedder | None = None,
    name: str | None = None,
) -> Build:
    """Adopt the live generation if needed, snapshot the source topic, write the record, start the builder."""
    await ensure_topics(settings.kafka)
    await asyncio.to_thread(registry.ensure)
    parent = await asyncio.to_thread(adopt_live, registry, settings, live_embedder or embedder)
    record = make_record(
        settings,
        source=await snapshot(settings.kafka),
        policy=policy,
        embedder=embedder,
        parent=parent,
        name=name,
    )
    record = await asyncio.to_thread(registry.put_record, record)
    return await Build(settings, registry, record, embedder, tokenizer).start()
