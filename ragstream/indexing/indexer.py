"""Indexing: the effects of a document change on one generation's collections.

Shared by the embedder consumer (the live generation) and the generation builder (a candidate): write the
new chunks, flip the document's state, delete the old ones, in that order, so readers stay consistent.
Encoding runs one group ahead of the writes on its own thread. Errors of the store surface as the
adapter's own exceptions; the caller classifies them (`ragstream.adapters.errors.translate`).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from opentelemetry import context as otel_context
from opentelemetry import trace

from ragstream.ports import ChunkRecord, ChunkStore, DocumentState, Embedder
from ragstream.runtime import metrics
from schemas.envelope import utcnow
from schemas.ingestion import AclChanged, DocumentChunked, DocumentDeleted, DocumentIndexed, DocumentRemoved

tracer = trace.get_tracer("ragstream.indexing")

__all__ = [
    "Indexer",
    "apply_batch",
    "chunk_records",
    "embed_text",
    "encode_groups",
    "is_unchanged",
    "version_of",
]


def embed_text(title: str, text: str, heading_path: tuple[str, ...]) -> str:
    """What the vector sees: title and heading path give a chunk its context."""
    head = " > ".join(h for h in (title, *heading_path) if h)
    return f"{head}\n{text}" if head else text


def version_of(ev: DocumentChunked) -> str:
    return ev.facts.source_version or ev.facts.content_sha256[:16]


def is_unchanged(state: DocumentState | None, ev: DocumentChunked, model_id: str) -> bool:
    return (
        state is not None
        and state.content_sha256 == ev.facts.content_sha256
        and state.policy_hash == ev.policy_hash
        and state.embedding_model == model_id
        and state.normalizer_version == ev.normalizer_version
    )


def chunk_records(ev: DocumentChunked, model_id: str, generation: str, now: datetime) -> list[ChunkRecord]:
    f = ev.facts
    return [
        ChunkRecord(
            chunk_id=c.chunk_id,
            document_id=f.document_id,
            position=c.position,
            text=c.text,
            title=f.title,
            heading=" > ".join(c.heading_path),
            source_id=f.source_id,
            source_version=version_of(ev),
            owner=f.owner,
            acl_principals=f.acl.principals,
            acl_groups=f.acl.groups,
            normalizer_version=ev.normalizer_version,
            policy_hash=ev.policy_hash,
            embedding_model=model_id,
            generation=generation,
            content_sha256=f.content_sha256,
            ingested_at=now,
        )
        for c in ev.chunks
    ]


@dataclass
class Indexer:
    """The effects, in the order that keeps readers consistent: write new, flip state, delete old."""

    store: ChunkStore
    embedder: Embedder
    generation: str

    def upsert(self, ev: DocumentChunked, vectors: np.ndarray | None) -> DocumentIndexed:
        t0 = time.perf_counter()
        tenant, f = ev.tenant_id, ev.facts
        self.store.ensure_tenant(tenant)
        state = self.store.get_state(tenant, f.document_id)
        base = {
            **ev.caused(producer="embedder"),
            "document_id": f.document_id,
            "source_version": version_of(ev),
            "generation": self.generation,
            "collection": self.store.chunks_name,
            "source_occurred_at": f.source_occurred_at,
        }
        if is_unchanged(state, ev, self.embedder.model_id):
            assert state is not None
            acl_only = (state.acl_principals, state.acl_groups) != (f.acl.principals, f.acl.groups)
            if acl_only:
                self._set_acl(tenant, state, f.acl.principals, f.acl.groups)
            # A replay after a crash between the state flip and the old chunks' delete lands here: finish
            # that replacement (at-least-once must converge), or the old version's chunks stay for ever.
            leftovers = set(self.store.chunk_ids_of(tenant, f.document_id)) - set(state.chunk_ids)
            return DocumentIndexed(
                **base,
                chunk_ids=state.chunk_ids,
                chunks_deleted=self.store.delete_chunks(tenant, sorted(leftovers)) if leftovers else 0,
                unchanged=not acl_only,
                acl_only=acl_only,
                timings_ms={**ev.timings_ms, "index": (time.perf_counter() - t0) * 1000},
            )
        if vectors is None:
            vectors = self.embedder.embed(
                [embed_text(ev.facts.title, c.text, c.heading_path) for c in ev.chunks]
            )
        now = utcnow()
        records = chunk_records(ev, self.embedder.model_id, self.generation, now)
        self.store.write_chunks(tenant, records, vectors)
        new_ids = tuple(r.chunk_id for r in records)
        self.store.put_state(
            tenant,
            DocumentState(
                document_id=f.document_id,
                live_version=version_of(ev),
                content_sha256=f.content_sha256,
                policy_hash=ev.policy_hash,
                embedding_model=self.embedder.model_id,
                normalizer_version=ev.normalizer_version,
                chunk_ids=new_ids,
                acl_principals=f.acl.principals,
                acl_groups=f.acl.groups,
                source_id=f.source_id,
                owner=f.owner,
                title=f.title,
                generation=self.generation,
                indexed_at=now,
                source_occurred_at=f.source_occurred_at,
            ),
        )
        stale = set(state.chunk_ids) - set(new_ids) if state else set()
        # Leftovers of an interrupted earlier replacement are found by document id, not only by state.
        stale |= set(self.store.chunk_ids_of(tenant, f.document_id)) - set(new_ids)
        deleted = self.store.delete_chunks(tenant, sorted(stale))
        return DocumentIndexed(
            **base,
            chunk_ids=new_ids,
            chunks_written=len(new_ids),
            chunks_deleted=deleted,
            timings_ms={**ev.timings_ms, "index": (time.perf_counter() - t0) * 1000},
        )

    def remove(self, ev: DocumentRemoved) -> DocumentDeleted:
        tenant = ev.tenant_id
        removed: set[str] = set()
        if self.store.has_tenant(tenant):
            self.store.ensure_tenant(tenant)
            state = self.store.get_state(tenant, ev.document_id)
            ids = set(state.chunk_ids) if state else set()
            ids |= set(self.store.chunk_ids_of(tenant, ev.document_id))
            self.store.delete_chunks(tenant, sorted(ids))
            self.store.delete_state(tenant, ev.document_id)
            removed = ids
            remaining = len(self.store.chunk_ids_of(tenant, ev.document_id))
        else:
            remaining = 0
        return DocumentDeleted(
            **ev.caused(producer="embedder"),
            document_id=ev.document_id,
            generation=self.generation,
            collection=self.store.chunks_name,
            removed_chunk_ids=tuple(sorted(removed)),
            remaining_chunks=remaining,
            source_occurred_at=ev.source_occurred_at,
        )

    def acl(self, ev: AclChanged) -> DocumentIndexed | None:
        if not self.store.has_tenant(ev.tenant_id):
            return None
        self.store.ensure_tenant(ev.tenant_id)
        state = self.store.get_state(ev.tenant_id, ev.document_id)
        if state is None:
            return None
        self._set_acl(ev.tenant_id, state, ev.acl.principals, ev.acl.groups)
        return DocumentIndexed(
            **ev.caused(producer="embedder"),
            document_id=ev.document_id,
            source_version=state.live_version,
            generation=self.generation,
            collection=self.store.chunks_name,
            chunk_ids=state.chunk_ids,
            acl_only=True,
            source_occurred_at=ev.occurred_at,
        )

    def _set_acl(
        self, tenant: str, state: DocumentState, principals: tuple[str, ...], groups: tuple[str, ...]
    ) -> None:
        self.store.update_acl(tenant, state.chunk_ids, principals, groups)
        self.store.put_state(
            tenant, state.model_copy(update={"acl_principals": principals, "acl_groups": groups})
        )

    def embed_batch(self, events: list[DocumentChunked]) -> list[np.ndarray | None]:
        """One embedding call for every chunk of these documents."""
        texts: list[str] = []
        spans: list[tuple[int, int]] = []
        for ev in events:
            start = len(texts)
            texts.extend(embed_text(ev.facts.title, c.text, c.heading_path) for c in ev.chunks)
            spans.append((start, len(texts)))
        if not texts:
            return [None] * len(events)
        t0 = time.perf_counter()
        vectors = self.embedder.embed(texts)
        metrics.EMBED_LATENCY.labels(self.embedder.model_id).observe(time.perf_counter() - t0)
        metrics.EMBED_TOKENS.labels(self.embedder.model_id).inc(
            sum(c.token_count for e in events for c in e.chunks)
        )
        return [vectors[a:b] for a, b in spans]


def _unchanged_filter(indexer: Indexer, events: list[DocumentChunked]) -> list[DocumentChunked]:
    out = []
    for ev in events:
        indexer.store.ensure_tenant(ev.tenant_id)
        if not is_unchanged(
            indexer.store.get_state(ev.tenant_id, ev.facts.document_id), ev, indexer.embedder.model_id
        ):
            out.append(ev)
    return out


def encode_groups(events: list[DocumentChunked], min_chunks: int) -> list[list[DocumentChunked]]:
    """Consecutive documents in groups of at least `min_chunks` chunks (one encode call each)."""
    groups: list[list[DocumentChunked]] = []
    current: list[DocumentChunked] = []
    size = 0
    for ev in events:
        current.append(ev)
        size += len(ev.chunks)
        if size >= min_chunks:
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    return groups


def apply_batch(
    indexer: Indexer,
    events: list[object],
    contexts: list[otel_context.Context] | None = None,
) -> list[DocumentIndexed | DocumentDeleted]:
    """Apply a poll's events in order. Encoding runs one group ahead on its own thread, so Weaviate
    writes of group k overlap the encoding of group k+1; effects stay in event order (one writer)."""
    chunked = [e for e in events if isinstance(e, DocumentChunked)]
    to_embed = _unchanged_filter(indexer, chunked)
    pending: dict[int, tuple[Future[list[np.ndarray | None]], int]] = {}
    receipts: list[DocumentIndexed | DocumentDeleted] = []
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
    try:
        # A single worker runs the groups in submission order: always the next one the writes need.
        size = getattr(indexer.embedder, "batch_size", 64)  # the embedder's own encode batch
        for group in encode_groups(to_embed, size):
            fut = pool.submit(indexer.embed_batch, group)
            pending.update({id(ev): (fut, i) for i, ev in enumerate(group)})
        for i, ev in enumerate(events):
            # One `index` span per document, under that document's `embed` span (one trace per change).
            ctx = contexts[i] if contexts else otel_context.get_current()
            with tracer.start_as_current_span("index", context=ctx) as span:
                r: DocumentIndexed | DocumentDeleted | None = None
                if isinstance(ev, DocumentChunked):
                    slot = pending.get(id(ev))
                    r = indexer.upsert(ev, slot[0].result()[slot[1]] if slot else None)
                elif isinstance(ev, DocumentRemoved):
                    r = indexer.remove(ev)
                elif isinstance(ev, AclChanged):
                    r = indexer.acl(ev)
                if r is not None:
                    receipts.append(r)
                    span.set_attributes(_receipt_attributes(r))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a failed write abandons the encodes not started
    return receipts


def _receipt_attributes(r: DocumentIndexed | DocumentDeleted) -> dict[str, str | int | bool]:
    if isinstance(r, DocumentDeleted):
        return {"index.operation": "delete", "index.chunks_deleted": len(r.removed_chunk_ids)}
    return {
        "index.operation": "acl" if r.acl_only else ("unchanged" if r.unchanged else "upsert"),
        "index.chunks_written": r.chunks_written,
        "index.chunks_deleted": r.chunks_deleted,
        "index.collection": r.collection,
    }
