"""Chunker consumer.

In:  ragstream.ingest.documents-normalized.v1
Out: ragstream.ingest.documents-chunked.v1 (DocumentChunked; DocumentRemoved and AclChanged pass through)
Group: ragstream.chunker. Ack: commit after the output is acknowledged.
Idempotency: chunk ids = uuid5(tenant, document, source version, policy hash, position).
"""

from __future__ import annotations

import asyncio
import time

from ragstream.core.chunk import ChunkingPolicy, chunk
from ragstream.core.normalize import NormalizedDocument, Section
from ragstream.core.tokenizer import Tokenizer
from ragstream.runtime.worker import Inbound, Outbound, event_key
from schemas.ingestion import ChunkPayload, DocumentChunked, DocumentNormalized
from schemas.topics import CONSUMERS

SPEC = CONSUMERS["chunker"]


def version_of(ev: DocumentNormalized) -> str:
    """The version chunk ids hang on: the source's version, else the content hash."""
    return ev.facts.source_version or ev.facts.content_sha256[:16]


def to_chunked(ev: DocumentNormalized, policy: ChunkingPolicy, tokenizer: Tokenizer) -> DocumentChunked:
    started = time.perf_counter()
    doc = NormalizedDocument(
        title=ev.facts.title,
        mime_type=ev.facts.mime_type,
        normalizer_version=ev.normalizer_version,
        content_sha256=ev.facts.content_sha256,
        text_sha256=ev.text_sha256,
        sections=tuple(Section(heading_path=s.heading_path, text=s.text) for s in ev.sections),
    )
    chunks = chunk(
        doc,
        policy,
        tokenizer,
        tenant_id=ev.tenant_id,
        document_id=ev.facts.document_id,
        source_version=version_of(ev),
    )
    payloads = tuple(
        ChunkPayload(
            chunk_id=c.chunk_id,
            position=c.position,
            text=c.text,
            heading_path=c.heading_path,
            token_count=c.token_count,
        )
        for c in chunks
    )
    return DocumentChunked(
        **ev.caused(producer="chunker"),
        facts=ev.facts,
        normalizer_version=ev.normalizer_version,
        policy_hash=policy.policy_hash,
        policy_name=policy.name,
        chunks=payloads,
        timings_ms={"normalize": ev.normalize_ms, "chunk": (time.perf_counter() - started) * 1000},
    )


def build_handler(policy: ChunkingPolicy, tokenizer: Tokenizer):
    out_topic = SPEC.output
    assert out_topic is not None

    async def handle(items: list[Inbound]) -> list[Outbound]:
        outputs: list[Outbound] = []
        for item in items:
            ev = item.event
            out = (
                await asyncio.to_thread(to_chunked, ev, policy, tokenizer)
                if isinstance(ev, DocumentNormalized)
                else ev
            )
            if item.span is not None and isinstance(out, DocumentChunked):
                item.span.set_attributes(
                    {"chunk.count": len(out.chunks), "chunk.policy_hash": out.policy_hash}
                )
            outputs.append(
                Outbound(
                    out_topic, event_key(out), out, partition=item.record.partition, context=item.context
                )
            )
        return outputs

    return handle
