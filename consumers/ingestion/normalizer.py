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
import time
from collections.abc import Sequence
from pathlib import Path

from ragstream.adapters.content import ContentRefError, read_file_uri
from ragstream.core.normalize import (
    MARKDOWN,
    NORMALIZER_VERSION,
    SUPPORTED,
    NormalizationError,
    normalize,
)
from ragstream.runtime import metrics
from ragstream.runtime.worker import Inbound, Outbound, PermanentError, event_key
from ragstream.settings import Settings
from schemas.ingestion import (
    AclChanged,
    DocumentChanged,
    DocumentFacts,
    DocumentNormalized,
    DocumentRemoved,
    SectionPayload,
)
from schemas.topics import CONSUMERS

SPEC = CONSUMERS["normalizer"]


def load_content(event: DocumentChanged, max_bytes: int, roots: Sequence[Path] = ()) -> bytes:
    """Inline bytes, or a `file://` URI confined to `roots` (settings.ingest.content_roots; none: refused)."""
    inline = event.inline_content()
    if inline is not None:
        return inline
    try:
        return read_file_uri(event.content_uri or "", roots, max_bytes)
    except ContentRefError as exc:
        raise PermanentError(exc.reason, exc.message) from exc


def format_label(mime_type: str) -> str:
    """The metrics label of a (publisher-chosen, untrusted) MIME type: a supported format or "other"."""
    fmt = (mime_type or "").split(";")[0].strip().lower()
    if fmt == "text/x-markdown":
        fmt = MARKDOWN
    return fmt if fmt in SUPPORTED else "other"


def to_normalized(event: DocumentChanged, raw: bytes, max_bytes: int) -> DocumentNormalized:
    started = time.perf_counter()
    fmt = event.mime_type.split(";")[0].strip()
    try:
        doc = normalize(raw, fmt, max_bytes=max_bytes, filename=event.metadata.get("path"))
    except NormalizationError as exc:
        metrics.NORMALIZED.labels(format_label(fmt), "failed").inc()
        raise PermanentError(
            str(exc.reason.value if hasattr(exc.reason, "value") else exc.reason), exc.message
        ) from exc
    metrics.NORMALIZED.labels(format_label(doc.mime_type), "ok").inc()
    facts = DocumentFacts(
        document_id=event.document_id,
        source_id=event.source_id,
        source_version=event.source_version,
        owner=event.owner,
        acl=event.acl,
        title=event.title or doc.title,
        mime_type=fmt,
        content_sha256=doc.content_sha256,
        source_occurred_at=event.occurred_at,
        metadata=event.metadata,
    )
    return DocumentNormalized(
        **event.caused(producer="normalizer"),
        facts=facts,
        normalizer_version=NORMALIZER_VERSION,
        sections=tuple(SectionPayload(heading_path=s.heading_path, text=s.text) for s in doc.sections),
        text_sha256=doc.text_sha256,
        normalize_ms=(time.perf_counter() - started) * 1000,
    )


def build_handler(settings: Settings):
    max_bytes = settings.ingest.max_document_bytes
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
                out = DocumentRemoved(
                    **ev.caused(producer="normalizer"),
                    document_id=ev.document_id,
                    source_occurred_at=ev.occurred_at,
                )
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
