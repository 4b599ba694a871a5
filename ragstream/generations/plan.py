"""`generation plan`: what a rebuild would cost, per tenant, without writing anything.

It replays the compacted source topic exactly as the builder would (no consumer group, no commit, nothing
written to Weaviate), normalizes and chunks every upsert under the candidate's policy, and skips what the
builder's indexer would skip (the same content again). That gives documents, chunks and tokens exactly.
Time: the normalize + chunk time it just spent, plus tokens / the candidate model's throughput measured on
a sample of the real chunks here, plus chunks / the configured write rate, plus start-up. Cost: tokens x
the configured price per million. Storage: vectors, graph links, text and properties per chunk.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ragstream.adapters.embedder import Embedder
from ragstream.core.chunk import ChunkingPolicy
from ragstream.core.tokenizer import Tokenizer
from ragstream.indexing.builder import to_chunked_event
from ragstream.indexing.indexer import embed_text
from ragstream.runtime.kafka import consumer as kafka_consumer
from ragstream.runtime.kafka_admin import partitions_of
from ragstream.runtime.limits import Limits
from ragstream.runtime.offsets import read_to_end
from ragstream.runtime.worker import PermanentError
from ragstream.settings import Settings
from schemas.errors import EventDecodeError, decode
from schemas.ingestion import AclChanged, DocumentChunked, DocumentRemoved
from schemas.topics import SOURCE_CHANGES

HNSW_LINK_BYTES = 2 * 32 * 8  # layer-0 neighbours (2 x maxConnections) x 8-byte ids
OBJECT_OVERHEAD_BYTES = 700  # properties, ids, inverted-index postings beyond the text itself


@dataclass
class TenantPlan:
    documents: int = 0
    chunks: int = 0
    tokens: int = 0
    text_bytes: int = 0
    chunks_to_embed: int = 0
    tokens_to_embed: int = 0
    skipped_unchanged: int = 0
    failed: int = 0


@dataclass
class Plan:
    """The dry run's figures (see `to_json`)."""

    policy: ChunkingPolicy
    model_id: str
    dimensions: int
    tenants: dict[str, TenantPlan] = field(default_factory=dict)
    records: int = 0
    prepare_s: float = 0.0
    sample_chunks: int = 0
    sample_tokens: int = 0
    sample_s: float = 0.0
    sample_cpu_s: float = 0.0
    settings: Settings | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.sample_tokens / self.sample_s if self.sample_s > 0 else 0.0

    def _storage(self, t: TenantPlan) -> int:
        return t.chunks * (self.dimensions * 4 + HNSW_LINK_BYTES + OBJECT_OVERHEAD_BYTES) + 2 * t.text_bytes

    def to_json(self) -> dict[str, Any]:
        assert self.settings is not None
        g = self.settings.generations
        price = g.price_per_million_tokens.get(self.model_id, g.default_price_per_million_tokens)
        total_tokens = sum(t.tokens_to_embed for t in self.tenants.values())
        total_chunks = sum(t.chunks_to_embed for t in self.tenants.values())
        embed_s = total_tokens / self.tokens_per_s if self.tokens_per_s else 0.0
        write_s = total_chunks / g.write_chunks_per_s if g.write_chunks_per_s else 0.0
        total_s = g.build_startup_s + self.prepare_s + embed_s + write_s

        def share(t: TenantPlan) -> float:
            return t.tokens_to_embed / total_tokens if total_tokens else 0.0

        tenants = {
            name: {
                "documents": t.documents,
                "chunks": t.chunks,
                "tokens": t.tokens,
                "chunks_to_embed": t.chunks_to_embed,
                "tokens_to_embed": t.tokens_to_embed,
                "skipped_unchanged": t.skipped_unchanged,
                "failed": t.failed,
                "estimated_seconds": round((total_s - g.build_startup_s) * share(t), 2),
                "estimated_cost": round(t.tokens_to_embed / 1e6 * price, 6),
                "estimated_storage_bytes": self._storage(t),
            }
            for name, t in sorted(self.tenants.items())
        }
        return {
            "embedding_model": self.model_id,
            "dimensions": self.dimensions,
            "policy_hash": self.policy.policy_hash,
            "chunking_policy": self.policy.model_dump(mode="json"),
            "records": self.records,
            "documents": sum(t.documents for t in self.tenants.values()),
            "chunks": sum(t.chunks for t in self.tenants.values()),
            "chunks_to_embed": total_chunks,
            "tokens_to_embed": total_tokens,
            "throughput_tokens_per_s": round(self.tokens_per_s, 1),
            "throughput_sample": {
                "chunks": self.sample_chunks,
                "tokens": self.sample_tokens,
                "seconds": round(self.sample_s, 3),
                "cpu_seconds": round(self.sample_cpu_s, 3),
            },
            # CPU time to embed (all cores of this process): unlike wall time, it does not move with the
            # machine's load, so it compares across a busy plan and a quiet build.
            "estimated_embed_cpu_seconds": round(
                total_tokens * self.sample_cpu_s / self.sample_tokens if self.sample_tokens else 0.0, 2
            ),
            "estimated_seconds": round(total_s, 2),
            "estimated_seconds_parts": {
                "startup": g.build_startup_s,
                "normalize_chunk": round(self.prepare_s, 2),
                "embed": round(embed_s, 2),
                "write": round(write_s, 2),
            },
            "price_per_million_tokens": price,
            "estimated_cost": round(total_tokens / 1e6 * price, 6),
            "estimated_storage_bytes": sum(self._storage(t) for t in self.tenants.values()),
            "tenants": tenants,
        }


async def read_source(settings: Settings) -> list[Any]:
    """Every event on the source topic up to its current end (no group: nothing is committed)."""
    kafka = settings.kafka
    consumer = kafka_consumer(
        kafka,
        enable_auto_commit=False,
        max_partition_fetch_bytes=kafka.max_message_bytes,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = await partitions_of(consumer, kafka.topic_prefix + SOURCE_CHANGES.name)
        events: list[Any] = []
        async for r in read_to_end(consumer, tps, max_records=1000):
            # the builder dead-letters undecodable records: nothing to embed
            with contextlib.suppress(EventDecodeError):
                events.append(decode(SOURCE_CHANGES, r.value or b""))
        return events
    finally:
        await consumer.stop()


def plan_events(
    settings: Settings,
    events: list[Any],
    policy: ChunkingPolicy,
    tokenizer: Tokenizer,
    embedder: Embedder,
) -> Plan:
    """The pure part: chunk every upsert as the builder would, then measure the model on a sample."""
    plan = Plan(policy, embedder.model_id, int(getattr(embedder, "dimensions", 0) or 0), settings=settings)
    latest: dict[tuple[str, str], DocumentChunked] = {}
    t0 = time.perf_counter()
    embed_samples: list[list[tuple[str, int]]] = []  # per document version: (embedded text, tokens)
    for ev in events:
        plan.records += 1
        if isinstance(ev, AclChanged):
            continue
        tenant = plan.tenants.setdefault(ev.tenant_id, TenantPlan())
        try:
            out = to_chunked_event(
                ev, policy, tokenizer, Limits.of(settings).document_bytes, settings.ingest.content_roots
            )
        except PermanentError:
            tenant.failed += 1
            continue
        key = (ev.tenant_id, ev.document_id)
        if isinstance(out, DocumentRemoved):
            latest.pop(key, None)
            continue
        prev = latest.get(key)
        if prev is not None and prev.facts.content_sha256 == out.facts.content_sha256:
            tenant.skipped_unchanged += 1  # the indexer's no-op: same content, policy and model
            continue
        latest[key] = out
        tenant.chunks_to_embed += len(out.chunks)
        tenant.tokens_to_embed += sum(c.token_count for c in out.chunks)
        embed_samples.append(
            [(embed_text(out.facts.title, c.text, c.heading_path), c.token_count) for c in out.chunks]
        )
    plan.prepare_s = time.perf_counter() - t0
    by_tenant: dict[str, list[DocumentChunked]] = defaultdict(list)
    for (tenant_id, _), ev in latest.items():
        by_tenant[tenant_id].append(ev)
    for tenant_id, docs in by_tenant.items():
        t = plan.tenants[tenant_id]
        t.documents = len(docs)
        t.chunks = sum(len(d.chunks) for d in docs)
        t.tokens = sum(c.token_count for d in docs for c in d.chunks)
        t.text_bytes = sum(len(c.text.encode()) for d in docs for c in d.chunks)
    _measure(plan, embedder, embed_samples, settings)
    return plan


def _measure(plan: Plan, embedder: Embedder, docs: list[list[tuple[str, int]]], settings: Settings) -> None:
    """Throughput of the candidate model on whole documents spread evenly over the corpus.

    Whole documents, in one call: the builder embeds every chunk of a poll's documents in one call (the
    model sorts them by length into batches), so padding and batching are alike. The sample is embedded
    twice and the second call timed: first calls of a shape cost more, which a long build amortizes.
    """
    want = settings.generations.plan_sample_chunks
    docs = [d for d in docs if d]
    if want <= 0 or not docs:
        return
    mean = sum(len(d) for d in docs) / len(docs)
    k = min(len(docs), max(1, round(want / mean)))
    picked = [docs[int(i * len(docs) / k)] for i in range(k)]
    texts = [item for d in picked for item in d]
    embedder.embed([text for text, _ in texts])
    t0, c0 = time.perf_counter(), time.process_time()
    embedder.embed([text for text, _ in texts])
    plan.sample_s = time.perf_counter() - t0
    plan.sample_cpu_s = time.process_time() - c0
    plan.sample_chunks = len(texts)
    plan.sample_tokens = sum(tokens for _, tokens in texts)


async def plan_rebuild(
    settings: Settings, policy: ChunkingPolicy, tokenizer: Tokenizer, embedder: Embedder
) -> Plan:
    """Read the source topic and plan a rebuild under `policy` with `embedder` (nothing is written)."""
    import asyncio

    events = await read_source(settings)
    return await asyncio.to_thread(plan_events, settings, events, policy, tokenizer, embedder)
