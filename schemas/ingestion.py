"""Ingestion-plane events: source changes in, receipts out.

The source-change topic carries `DocumentChanged` (upsert / delete) and `AclChanged`, keyed by
tenant + document so one document's events stay ordered; it is log-compacted, so replaying it from the
beginning yields every document's latest state (content inline up to a cap, or by URI).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.envelope import DocumentId, Event

INLINE_CONTENT_MAX_BYTES = 4_000_000


class Acl(BaseModel):
    """Who may read a document: any listed principal, or any member of a listed group."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    principals: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    @field_validator("principals", "groups")
    @classmethod
    def _sorted_unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(v)))


class DocumentChanged(Event):
    """A source system created, changed or deleted a document."""

    type: Literal["DocumentChanged"] = "DocumentChanged"
    op: Literal["upsert", "delete"]
    document_id: DocumentId
    source_id: str = ""
    source_version: str = ""
    owner: str = ""
    acl: Acl = Acl()
    mime_type: str = "text/plain"
    title: str = ""
    content_b64: str | None = Field(default=None, description="Raw bytes, base64, at most 4 MB decoded")
    content_uri: str | None = Field(default=None, description="file:// (local) or object-store URI")
    content_sha256: str = ""
    size_bytes: int = 0
    metadata: dict[str, str] = {}
    modified_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _content_present(self) -> DocumentChanged:
        if self.op == "upsert" and self.content_b64 is None and self.content_uri is None:
            raise ValueError("content_b64 or content_uri is required for an upsert")
        if self.content_b64 is not None and len(self.content_b64) > INLINE_CONTENT_MAX_BYTES * 4 // 3 + 4:
            raise ValueError(
                f"content_b64 exceeds the inline cap of {INLINE_CONTENT_MAX_BYTES} bytes; use content_uri"
            )
        return self

    def inline_content(self) -> bytes | None:
        return None if self.content_b64 is None else base64.b64decode(self.content_b64, validate=True)


class AclChanged(Event):
    """A document's readers changed; no content change, so no re-embedding."""

    type: Literal["AclChanged"] = "AclChanged"
    document_id: DocumentId
    acl: Acl
    acl_version: int = 0


SourceChange = Annotated[DocumentChanged | AclChanged, Field(discriminator="type")]


class SectionPayload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    heading_path: tuple[str, ...] = ()
    text: str


class DocumentFacts(BaseModel):
    """What travels with every chunk of a document version."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    document_id: DocumentId
    source_id: str = ""
    source_version: str = ""
    owner: str = ""
    acl: Acl = Acl()
    title: str = ""
    mime_type: str = ""
    content_sha256: str = ""
    source_occurred_at: datetime | None = None
    metadata: dict[str, str] = {}


class DocumentNormalized(Event):
    type: Literal["DocumentNormalized"] = "DocumentNormalized"
    facts: DocumentFacts
    normalizer_version: str
    sections: tuple[SectionPayload, ...]
    text_sha256: str
    normalize_ms: float = 0.0


class DocumentRemoved(Event):
    """A delete travelling down the pipeline (so it stays ordered after earlier upserts)."""

    type: Literal["DocumentRemoved"] = "DocumentRemoved"
    document_id: DocumentId
    source_occurred_at: datetime | None = None


class ChunkPayload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    chunk_id: str
    position: int
    text: str
    heading_path: tuple[str, ...] = ()
    token_count: int


class DocumentChunked(Event):
    type: Literal["DocumentChunked"] = "DocumentChunked"
    facts: DocumentFacts
    normalizer_version: str
    policy_hash: str
    policy_name: str = ""
    chunks: tuple[ChunkPayload, ...]
    timings_ms: dict[str, float] = {}


NormalizedStream = Annotated[DocumentNormalized | DocumentRemoved | AclChanged, Field(discriminator="type")]
ChunkedStream = Annotated[DocumentChunked | DocumentRemoved | AclChanged, Field(discriminator="type")]


class DocumentIndexed(Event):
    """Receipt: a document version is searchable."""

    type: Literal["DocumentIndexed"] = "DocumentIndexed"
    document_id: DocumentId
    source_version: str = ""
    generation: str
    collection: str
    chunk_ids: tuple[str, ...] = ()
    chunks_written: int = 0
    chunks_deleted: int = 0
    unchanged: bool = False
    acl_only: bool = False
    timings_ms: dict[str, float] = {}
    source_occurred_at: datetime | None = None


class DocumentDeleted(Event):
    """Receipt and deletion proof: every chunk that was removed, by id."""

    type: Literal["DocumentDeleted"] = "DocumentDeleted"
    document_id: DocumentId
    generation: str
    collection: str
    removed_chunk_ids: tuple[str, ...] = ()
    remaining_chunks: int = 0
    source_occurred_at: datetime | None = None


IngestionReceipt = Annotated[DocumentIndexed | DocumentDeleted, Field(discriminator="type")]
