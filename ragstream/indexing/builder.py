"""Generation builder: the consumer a build runs beside the live pipeline (ragstream.generations.build).

In:  ragstream.ingest.source-changes.v1 (compacted; replayed from the beginning: every document's latest
     state, then whatever arrives while the build runs)
Out: the candidate generation's collections (`<chunks prefix>_<name>`, `<documents>_<name>`); no topic
Group: ragstream.generation-builder.<name> (its own, so the live pipeline is untouched).
Ack: commit only after Weaviate acknowledged every write of the batch. Idempotency: chunk ids are
deterministic and writes are upserts; the per-document state makes a replayed unchanged document a no-op.
The candidate is ready when this group's lag reaches zero. Normalize, chunk (under the candidate's policy)
and embed (with the candidate's model) happen in one step here: the shared intermediate topics carry the
live generation's policy and must not see the candidate's chunks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ragstream.adapters.errors import ADAPTER_ERRORS, translate
from ragstream.core.chunk import ChunkingPolicy
from ragstream.core.tokenizer import Tokenizer
from ragstream.indexing.indexer import Indexer, apply_batch
from ragstream.indexing.transforms import load_content, removed, to_chunked, to_normalized
from ragstream.ports import Embedder
from ragstream.runtime.worker import Handler, Inbound, Outbound
from schemas.ingestion import AclChanged, DocumentChanged, DocumentChunked, DocumentIndexed, DocumentRemoved
from schemas.topics import SOURCE_CHANGES, ConsumerSpec


def builder_group(name: str) -> str:
    return f"ragstream.generation-builder.{name}"


def builder_spec(name: str) -> ConsumerSpec:
    """The builder of generation `name`: one consumer group per candidate generation."""
    return ConsumerSpec(
        "generation-builder", builder_group(name), SOURCE_CHANGES.name, None, "ragstream.indexing.builder"
    )


@dataclass
class BuildCounters:
    """What the build did: the figures `generation plan` predicts."""

    records: int = 0
    upserts: int = 0
    deletes: int = 0
    acl_changes: int = 0
    chunks: int = 0
    tokens: int = 0
    embed_s: float = 0.0
    embed_cpu_s: float = 0.0
    documents: set[tuple[str, str]] = field(default_factory=set)

    def to_json(self) -> dict[str, int]:
        return {
            "records": self.records,
            "upserts": self.upserts,
            "deletes": self.deletes,
            "acl_changes": self.acl_changes,
            "chunks_embedded": self.chunks,
            "tokens_embedded": self.tokens,
            "embed_seconds": round(self.embed_s, 3),
            "embed_cpu_seconds": round(self.embed_cpu_s, 3),
        }


class TimedEmbedder:
    """The candidate's embedder, timing every call into the build's counters (wall and process CPU)."""

    def __init__(self, inner: Embedder, counters: BuildCounters) -> None:
        self.inner = inner
        self.counters = counters
        self.model_id = inner.model_id
        self.revision = inner.revision
        self.dimensions = inner.dimensions

    def embed(self, texts: list[str]) -> np.ndarray:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return self.inner.embed(texts)
        finally:
            self.counters.embed_s += time.perf_counter() - t0
            self.counters.embed_cpu_s += time.process_time() - c0


def to_chunked_event(
    ev: DocumentChanged,
    policy: ChunkingPolicy,
    tokenizer: Tokenizer,
    max_bytes: int,
    roots: tuple[Path, ...] = (),
) -> DocumentChunked | DocumentRemoved:
    """One source change as the live pipeline's normalizer + chunker would produce it (candidate policy)."""
    if ev.op == "delete":
        return removed(ev, "generation-builder")
    raw = load_content(ev, max_bytes, roots)  # the same content roots as the live normalizer
    return to_chunked(to_normalized(ev, raw, max_bytes), policy, tokenizer)


def build_handler(
    indexer: Indexer,
    policy: ChunkingPolicy,
    tokenizer: Tokenizer,
    max_bytes: int,
    counters: BuildCounters | None = None,
    roots: tuple[Path, ...] = (),
) -> Handler:
    """The worker handler: source changes in, candidate collections written, nothing published."""
    stats = counters if counters is not None else BuildCounters()

    def prepare(items: list[Inbound]) -> list[object]:
        out: list[object] = []
        for item in items:
            ev = item.event
            if isinstance(ev, AclChanged):
                out.append(ev)
            else:
                out.append(to_chunked_event(ev, policy, tokenizer, max_bytes, roots))
        return out

    async def handle(items: list[Inbound]) -> list[Outbound]:
        events = await asyncio.to_thread(prepare, items)
        try:
            receipts = await asyncio.to_thread(apply_batch, indexer, events)
        except ADAPTER_ERRORS as exc:  # permanent (4xx) -> dead letter now; transient -> retried
            raise translate(exc, "weaviate") from exc
        stats.records += len(items)
        pending = [e for e in events if isinstance(e, DocumentChunked)]
        for r in receipts:
            if not isinstance(r, DocumentIndexed) or not r.chunks_written:
                continue
            for i, ev in enumerate(pending):
                if (ev.tenant_id, ev.facts.document_id) == (r.tenant_id, r.document_id):
                    stats.chunks += len(ev.chunks)
                    stats.tokens += sum(c.token_count for c in ev.chunks)
                    del pending[i]
                    break
        for ev in events:
            if isinstance(ev, DocumentChunked):
                stats.upserts += 1
                stats.documents.add((ev.tenant_id, ev.facts.document_id))
            elif isinstance(ev, DocumentRemoved):
                stats.deletes += 1
            elif isinstance(ev, AclChanged):
                stats.acl_changes += 1
        return []

    return handle
