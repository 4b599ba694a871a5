"""Normalizer consumer.

In:  ragstream.ingest.source-changes.v1 (DocumentChanged upsert/delete, AclChanged)
Out: ragstream.ingest.documents-normalized.v1 (DocumentNormalized | DocumentRemoved | AclChanged)
Group: ragstream.normalizer. Ack: commit after the output is acknowledged (acks=all).
Idempotency: output is a pure function of (bytes, normalizer_version); downstream ids are deterministic.
Undecodable, encrypted, empty, oversized or corrupt input goes to the DLQ with the normalizer's reason.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from ragstream.core.normalize import NORMALIZER_VERSION, NormalizationError, normalize
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


def load_content(event: DocumentChanged, max_bytes: int) -> bytes:
    """Inline bytes or a file:// URI; the size cap is checked before reading a large file."""
    inline = event.inline_content()
    if inline is not None:
        return inline
    uri = urlparse(event.content_uri or "")
    if uri.scheme != "file":
        raise PermanentError("unsupported_uri", f"content_uri scheme {uri.scheme!r} is not supported")
    path = Path(unquote(uri.path))
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PermanentError("content_unavailable", f"cannot read {path}: {exc}") from exc
    if size > max_bytes:
        raise PermanentError("oversized", f"document is {size} bytes; the limit is {max_bytes}")
    return path.read_bytes()


def to_normalized(event: DocumentChanged, raw: bytes, max_bytes: int) -> DocumentNormalized:
    started = time.perf_counter()
    fmt = event.mime_type.split(";")[0].strip()
    try:
        doc = normalize(raw, fmt, max_bytes=max_bytes, filename=event.metadata.get("path"))
    except NormalizationError as exc:
        metrics.NORMALIZED.labels(fmt, "failed").inc()
        raise PermanentError(
            str(exc.reason.value if hasattr(exc.reason, "value") else exc.reason), exc.message
        ) from exc
    metrics.NORMALIZED.labels(fmt, "ok").inc()
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
                raw = await asyncio.to_thread(load_content, ev, max_bytes)
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
