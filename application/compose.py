"""The composition root: settings -> adapters -> `Deps` -> each consumer's `build_handler(deps)`.

The one place that knows which adapter implements which port. A consumer module declares what it needs
(`NEEDS`); `wire` fills in only those fields the caller's `Deps` leaves empty, so a test or the demo
swaps an adapter with `dataclasses.replace(deps, llm=ExtractiveStub())` and nothing else changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from types import ModuleType
from typing import Any

from consumers.evaluation import verifier
from consumers.ingestion import chunker, embedder, normalizer
from consumers.serving import generation, rerank, retrieval
from ragstream.adapters.embedder import SentenceTransformerEmbedder
from ragstream.adapters.embedding.compat import check_writer
from ragstream.adapters.llm import OpenAIChat
from ragstream.adapters.prompt_tokens import token_counter
from ragstream.adapters.reranker import from_spec
from ragstream.adapters.store import open_store
from ragstream.adapters.tokenizer import HFTokenizer
from ragstream.adapters.verifier import ModelVerifier
from ragstream.generations.registry import load_view
from ragstream.generations.routing import GenerationRouter
from ragstream.runtime.deps import Deps, chunking_policy
from ragstream.runtime.health import serve_health
from ragstream.runtime.kafka_admin import desired_topics, ensure_topics
from ragstream.runtime.worker import Handler, Producer, Worker
from ragstream.settings import Settings
from ragstream.telemetry import setup_tracing
from schemas.review import review_topic_specs
from schemas.topics import CONSUMERS, output_compression

log = logging.getLogger(__name__)

MODULES: dict[str, ModuleType] = {
    m.SPEC.name: m for m in (normalizer, chunker, embedder, retrieval, rerank, generation, verifier)
}
assert set(MODULES) == set(CONSUMERS), "every declared consumer has a module, and no other"


@dataclass
class Wired:
    """One consumer's handler, the deps it was built with, and what to close when it stops."""

    name: str
    handler: Handler
    deps: Deps
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in self.closers:
            with contextlib.suppress(Exception):
                close()


def shared_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    """One embedding model per process (the embedder and retrieval consumers both use it)."""
    return SentenceTransformerEmbedder(settings.embedding, settings.index.embedding_batch_size)


def ensure_review_topics(settings: Settings) -> bool:
    """Create the review queue's topics (schemas.review; not in the registry every tool creates) and mark
    them ready for generation's flags. Sync: `wire` runs in and out of event loops, so in its own thread."""
    if not settings.console.review_enabled:
        return False
    if generation.review_topics_ready(settings.kafka):
        return True
    topics = desired_topics(settings.kafka, review_topic_specs())
    try:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, ensure_topics(settings.kafka, topics)).result(timeout=60)
    except Exception as exc:
        log.warning("review topics unavailable, answers are not flagged for review: %s", exc)
        return False
    generation.mark_review_topics_ready(settings.kafka)
    return True


def recorded_embedding(client: Any, settings: Settings) -> tuple[str, str] | None:
    """(model, revision) the registry records for the configured generation; None when not recorded."""
    view = load_view(client, settings)
    state = view.generations.get(settings.index.generation) if view is not None else None
    return (
        None if state is None else (state.record.spec.embedding_model, state.record.spec.embedding_revision)
    )


def wire(name: str, base: Deps, producer: Producer) -> Wired:
    """The handler of consumer `name`, with every adapter it needs and `base` does not already carry."""
    module = MODULES[name]
    s = base.settings
    needs = set(module.NEEDS)
    fill: dict[str, Any] = {}
    closers: list[Callable[[], None]] = []
    client: Any = None
    if "store" in needs and base.store is None:
        client, store = open_store(s)
        closers.append(client.close)
        fill["store"] = store
        if "router" in needs and base.router is None:
            # Per-query generation routing (explicit, canary, per-tenant promotion, live alias).
            fill["router"] = GenerationRouter(
                client,
                s.index,
                default=store,
                view_loader=lambda: load_view(client, s),
                ttl_s=s.generations.routing_ttl_s,
            )
    if "embedder" in needs and base.embedder is None:
        fill["embedder"] = shared_embedder(s)
    if "tokenizer" in needs and base.tokenizer is None:
        fill["tokenizer"] = HFTokenizer()
    if "policy" in needs and base.policy is None:
        fill["policy"] = chunking_policy(s)
    if "reranker" in needs and base.reranker is None:
        fill["reranker"] = from_spec(s.serving.rerank)
    if "llm" in needs and base.llm is None:
        fill["llm"] = OpenAIChat(s.llm)
    if "count_tokens" in needs and base.count_tokens is None:
        fill["count_tokens"] = token_counter(s)
    if "verifier" in needs and base.verifier is None:
        model_verifier = ModelVerifier(s.verifier.llm(s.llm), budget_s=s.verifier.budget_s)
        closers.append(model_verifier.close)
        fill["verifier"] = model_verifier
    if name == "generation" and isinstance(producer, Producer):
        ensure_review_topics(s)  # a Kafka producer: flagged answers can reach the review topic
    if "send" in needs and base.send is None:
        # Streamed deltas are only enqueued; the final answer's acknowledgement covers them.
        fill["send"] = partial(producer.send_many, wait=False)
    deps = replace(base, **fill)
    try:
        if name == "embedder" and client is not None and "embedder" in fill:
            # The live writer must make the vectors the generation it writes into was recorded with.
            check_writer(fill["embedder"], recorded_embedding(client, s), s.index.generation)
        handler = module.build_handler(deps)
    except BaseException:
        for close in closers:
            close()
        raise
    return Wired(name, handler, deps, closers)


def worker_for(wired: Wired, producer: Producer, group: str | None = None) -> Worker:
    s = wired.deps.settings
    return Worker(
        CONSUMERS[wired.name],
        wired.handler,
        s,
        group=group,
        max_batch=s.index.consumer_batch_max,
        producer=producer,
    )


async def run_worker(
    name: str,
    settings: Settings,
    *,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
    group: str | None = None,
    deps: Deps | None = None,
) -> None:
    """`ragstream worker NAME`: one consumer in this process until SIGTERM or SIGINT."""
    spec = CONSUMERS[name]
    # Spans go to the OTLP endpoint when one is configured (RAGSTREAM_TELEMETRY__OTLP_ENDPOINT).
    setup_tracing(
        settings.telemetry.model_copy(update={"service_name": f"{settings.telemetry.service_name}-{name}"})
    )
    await ensure_topics(settings.kafka)
    producer = Producer(settings, output_compression(spec))
    wired = wire(name, deps or Deps(settings), producer)
    worker = worker_for(wired, producer, group)
    if metrics_port:
        # Loopback unless configured: the chart sets RAGSTREAM_TELEMETRY__METRICS_HOST for scraping.
        host = metrics_host or settings.telemetry.metrics_host
        serve_health(metrics_port, host, worker)
        log.info("%s /metrics, /livez, /readyz on %s:%d", name, host, metrics_port)
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
    wired.close()
