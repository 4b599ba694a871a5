"""Builds and runs one consumer process: settings -> adapters -> handler -> Worker, plus /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from prometheus_client import start_http_server

from ragstream.runtime.kafka_admin import ensure_topics
from ragstream.runtime.worker import Handler, Producer, Worker
from ragstream.settings import Settings
from ragstream.telemetry import setup_tracing
from schemas.topics import CONSUMERS, output_compression

log = logging.getLogger(__name__)


def build(
    name: str, settings: Settings, producer: Producer, **overrides: Any
) -> tuple[Handler, dict[str, Any]]:
    """The handler of consumer `name` with its adapters (injected here, once, at start-up)."""
    if name == "normalizer":
        from consumers.ingestion import normalizer

        return normalizer.build_handler(settings), {}
    if name == "chunker":
        from consumers.ingestion import chunker
        from ragstream.core.chunk import ChunkingPolicy
        from ragstream.core.tokenizer import HFTokenizer

        policy = overrides.get("policy") or ChunkingPolicy(
            max_tokens=settings.ingest.chunk_max_tokens, overlap_tokens=settings.ingest.chunk_overlap_tokens
        )
        return chunker.build_handler(policy, overrides.get("tokenizer") or HFTokenizer()), {}
    if name == "embedder":
        from consumers.ingestion import embedder
        from ragstream.adapters.embedder import SentenceTransformerEmbedder
        from ragstream.adapters.store import WeaviateStore
        from ragstream.adapters.weaviate_client import connect

        client = connect(settings.weaviate)
        store = WeaviateStore(
            client,
            settings.index.chunks_collection,
            f"{settings.index.documents_collection}_{settings.index.generation}",
        )
        store.ensure_schema()
        emb = overrides.get("embedder") or SentenceTransformerEmbedder(
            settings.embedding, settings.index.embedding_batch_size
        )
        indexer = embedder.Indexer(store, emb, settings.index.generation)
        return embedder.build_handler(indexer), {"close": client.close}
    from ragstream.runtime.serving import build_serving

    return build_serving(name, settings, producer, **overrides)


async def run_worker(
    name: str,
    settings: Settings,
    *,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
    group: str | None = None,
    **overrides: Any,
) -> None:
    spec = CONSUMERS[name]
    # Spans go to the OTLP endpoint when one is configured (RAGSTREAM_TELEMETRY__OTLP_ENDPOINT).
    setup_tracing(
        settings.telemetry.model_copy(update={"service_name": f"{settings.telemetry.service_name}-{name}"})
    )
    await ensure_topics(settings.kafka)
    producer = Producer(settings, output_compression(CONSUMERS[name]))
    handler, extras = build(name, settings, producer, **overrides)
    worker = Worker(
        spec, handler, settings, group=group, max_batch=settings.index.consumer_batch_max, producer=producer
    )
    if metrics_port:
        # Loopback unless configured: the chart sets RAGSTREAM_TELEMETRY__METRICS_HOST for scraping.
        host = metrics_host or settings.telemetry.metrics_host
        start_http_server(metrics_port, addr=host)
        log.info("%s /metrics on %s:%d", name, host, metrics_port)
    await worker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(worker.run())
    log.info("%s consuming %s as %s", name, spec.topic, worker.group)
    await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    await worker.stop()
    task.cancel()
    if "close" in extras:
        extras["close"]()
