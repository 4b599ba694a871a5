"""Ingest transforms: a source change -> normalized sections -> chunks, as pure steps over the events.

Shared by the normalizer and chunker consumers (the live pipeline) and the generation builder (one step,
under a candidate's policy). Content references are confined to the content roots
(`ragstream.adapters.content`); a failure that can never succeed raises `PermanentError` with a reason.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ragstream.adapters.content import ContentRefError, read_file_uri
from ragstream.core.chunk import ChunkingPolicy, chunk
from ragstream.core.normalize import (
    MARKDOWN,
    NORMALIZER_VERSION,
    SUPPORTED,
    NormalizationError,
    NormalizedDocument,
    Section,
    normalize,
)
from ragstream.core.tokenizer import Tokenizer
from ragstream.runtime import metrics
from ragstream.runtime.errors import PermanentError
from schemas.ingestion import (
    ChunkPayload,
    DocumentChanged,
    DocumentChunked,
    DocumentFacts,
    DocumentNormalized,
    DocumentRemoved,
    SectionPayload,
)


def removed(event: DocumentChanged, producer: str) -> DocumentRemoved:
    """A delete as the downstream event that carries it."""
    return DocumentRemoved(
        **event.caused(producer=producer),
        document_id=event.document_id,
        source_occurred_at=event.occurred_at,
    )


def load_content(event: DocumentChanged, max_bytes: int, roots: Sequence[Path] = ()) -> bytes:
    """Inline bytes, or a `file://` URI confined to `roots` (settings.ingest.content_roots; none: refused)."""
    try:
        inline = event.inline_content()
    except ValueError as exc:  # binascii.Error: never decodable, so dead-lettered at once with a reason
        raise PermanentError("invalid_content_b64", f"content_b64 is not base64: {exc}") from exc
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


def normalized_version(ev: DocumentNormalized) -> str:
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
        source_version=normalized_version(ev),
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
