"""Chunker consumer.

In:  ragstream.ingest.documents-normalized.v1
Out: ragstream.ingest.documents-chunked.v1 (DocumentChunked; DocumentRemoved and AclChanged pass through)
Group: ragstream.chunker. Ack: commit after the output is acknowledged.
Idempotency: chunk ids = uuid5(tenant, document, source version, policy hash, position).
"""

from __future__ import annotations

import asyncio

from ragstream.indexing.transforms import to_chunked
from ragstream.runtime.deps import Deps, Need, required
from ragstream.runtime.worker import Handler, Inbound, Outbound, event_key
from schemas.ingestion import DocumentChunked, DocumentNormalized
from schemas.topics import CONSUMERS

SPEC = CONSUMERS["chunker"]
NEEDS: tuple[Need, ...] = ("policy", "tokenizer")


def build_handler(deps: Deps) -> Handler:
    policy = required(deps.policy, "policy")
    tokenizer = required(deps.tokenizer, "tokenizer")
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
