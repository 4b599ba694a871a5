"""Embedder / indexer consumer.

In:  ragstream.ingest.documents-chunked.v1 (DocumentChunked | DocumentRemoved | AclChanged)
Out: ragstream.ingest.receipts.v1 (DocumentIndexed | DocumentDeleted)
Group: ragstream.embedder. Ack: commit only after Weaviate acknowledged every write of the batch and
the receipts were acknowledged. Idempotency: chunk ids are deterministic, writes are upserts by id, and
the per-document state makes unchanged content (same hash, policy, model) a no-op.
Batched across documents: a poll's chunks are encoded in groups of at least one encode batch, one group
ahead of the Weaviate writes (which overlap the next group's encoding). Weaviate errors are transient:
retried, never skipped.
"""

from __future__ import annotations

import asyncio
import uuid

from opentelemetry import context as otel_context

from ragstream.adapters.errors import ADAPTER_ERRORS, translate
from ragstream.indexing.indexer import Indexer, apply_batch
from ragstream.runtime import metrics
from ragstream.runtime.deps import Deps, Need, required
from ragstream.runtime.errors import PermanentError
from ragstream.runtime.worker import Handler, Inbound, Outbound, event_key
from schemas.envelope import utcnow
from schemas.ingestion import DocumentChunked
from schemas.topics import CONSUMERS

SPEC = CONSUMERS["embedder"]
NEEDS: tuple[Need, ...] = ("store", "embedder")


def build_handler(deps: Deps) -> Handler:
    store = required(deps.store, "store")
    # The embedder is the collections' writer: it creates them at start-up (idempotent).
    store.ensure_schema()
    return handler_for(Indexer(store, required(deps.embedder, "embedder"), deps.settings.index.generation))


def handler_for(indexer: Indexer) -> Handler:
    """The handler around an indexer (the composition root and tests may build the indexer themselves)."""
    out_topic = SPEC.output
    assert out_topic is not None

    async def handle(items: list[Inbound]) -> list[Outbound]:
        refuse_malformed(items)
        try:
            receipts = await asyncio.to_thread(
                apply_batch, indexer, [i.event for i in items], [i.context for i in items]
            )
        except ADAPTER_ERRORS as exc:  # permanent (4xx) -> dead letter now; transient -> retried
            raise translate(exc, "weaviate") from exc
        now = utcnow()
        for r in receipts:
            if r.source_occurred_at is not None:
                metrics.FRESHNESS.labels(metrics.tenant_bucket(r.tenant_id)).observe(
                    max(0.0, (now - r.source_occurred_at).total_seconds())
                )
        contexts = {i.event.event_id: i.context for i in items}
        return [
            Outbound(
                out_topic, event_key(r), r, context=contexts.get(r.causation_id, otel_context.get_current())
            )
            for r in receipts
        ]

    return handle


def refuse_malformed(items: list[Inbound]) -> None:
    """Refuse a batch holding a record that can never be written before any of it is encoded: the worker
    then isolates that record by halving the batch, and nothing is embedded twice (a chunk id that is not
    a UUID used to fail at the write, after the whole batch had been encoded: bench.fuzz)."""
    for item in items:
        ev = item.event
        if not isinstance(ev, DocumentChunked):
            continue
        for c in ev.chunks:
            try:
                uuid.UUID(c.chunk_id)
            except ValueError:
                raise PermanentError(
                    "invalid_chunk_id",
                    f"chunk id {c.chunk_id[:80]!r} of {ev.facts.document_id[:80]!r} is not a UUID",
                ) from None
