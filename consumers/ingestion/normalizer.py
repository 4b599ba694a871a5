"""Normalizer consumer.

In:  ragstream.ingest.source-changes.v1 (DocumentChanged upsert/delete, AclChanged)
Out: ragstream.ingest.documents-normalized.v1 (DocumentNormalized | DocumentRemoved | AclChanged)
Group: ragstream.normalizer. Ack: commit after the output is acknowledged (acks=all).
Idempotency: output is a pure function of (bytes, normalizer_version); downstream ids are deterministic.
Undecodable, encrypted, empty, oversized or corrupt input goes to the DLQ with the normalizer's reason.
file:// references are read only under settings.ingest.content_roots (ragstream.adapters.content); any
other reference is dead-lettered: uri_not_allowed, not_a_regular_file, oversized or content_unavailable.
"""

from __future__ import annotations

import asyncio

from ragstream.indexing.transforms import load_content, removed, to_normalized
from ragstream.runtime.deps import Deps, Need
from ragstream.runtime.limits import Limits
from ragstream.runtime.worker import Handler, Inbound, Outbound, event_key
from schemas.ingestion import AclChanged, DocumentNormalized
from schemas.topics import CONSUMERS

SPEC = CONSUMERS["normalizer"]
NEEDS: tuple[Need, ...] = ()


def build_handler(deps: Deps) -> Handler:
    settings = deps.settings
    # Capped by the topics' record size (ragstream.runtime.limits): a document read must fit once normalized.
    max_bytes = Limits.of(settings).document_bytes
    roots = settings.ingest.content_roots
    out_topic = SPEC.output
    assert out_topic is not None

    async def handle(items: list[Inbound]) -> list[Outbound]:
        outputs: list[Outbound] = []
        for item in items:
            ev = item.event
            if isinstance(ev, AclChanged):
                out = ev
            elif ev.op == "delete":
                out = removed(ev, "normalizer")
            else:
                raw = await asyncio.to_thread(load_content, ev, max_bytes, roots)
                out = await asyncio.to_thread(to_normalized, ev, raw, max_bytes)
            if item.span is not None and isinstance(out, DocumentNormalized):
                item.span.set_attributes(
                    {"document.format": out.facts.mime_type, "document.sections": len(out.sections)}
                )
            outputs.append(
                Outbound(
                    out_topic, event_key(out), out, partition=item.record.partition, context=item.context
                )
            )
        return outputs

    return handle
