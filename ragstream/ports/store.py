"""The chunk store port: what indexing, retrieval and the second authorization check need from a store.

The Weaviate store (`ragstream.adapters.store.WeaviateStore`) and the in-memory one
(`ragstream.adapters.memory_store.MemoryChunkStore`) both implement it; `tests/contract/` holds the one
suite both must pass. The docstrings below are the contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

# Fields a query may filter on (exact match); anything else is the caller's mistake (ValueError).
FILTERABLE = frozenset({"document_id", "source_id", "owner", "source_version", "policy_hash"})


class ChunkRecord(BaseModel):
    """One chunk as stored: text, its document's facts and the ACL it is readable under."""

    model_config = ConfigDict(frozen=True)
    chunk_id: str
    document_id: str
    position: int
    text: str
    title: str = ""
    heading: str = ""
    source_id: str = ""
    source_version: str = ""
    owner: str = ""
    acl_principals: tuple[str, ...] = ()
    acl_groups: tuple[str, ...] = ()
    normalizer_version: str = ""
    policy_hash: str = ""
    embedding_model: str = ""
    generation: str = ""
    content_sha256: str = ""
    ingested_at: datetime | None = None


class DocumentState(BaseModel):
    """A document's live version in one generation: which chunks are current, and its ACL."""

    model_config = ConfigDict(frozen=True)
    document_id: str
    live_version: str
    content_sha256: str = ""
    policy_hash: str = ""
    embedding_model: str = ""
    normalizer_version: str = ""
    chunk_ids: tuple[str, ...] = ()
    acl_principals: tuple[str, ...] = ()
    acl_groups: tuple[str, ...] = ()
    source_id: str = ""
    owner: str = ""
    title: str = ""
    generation: str = ""
    indexed_at: datetime | None = None
    source_occurred_at: datetime | None = None


class SearchHit(BaseModel):
    model_config = ConfigDict(frozen=True)
    chunk_id: str
    score: float
    properties: dict[str, Any]
    # Cosine of the chunk's vector and the query vector (dense and hybrid searches only).
    relevance: float | None = None


@dataclass(frozen=True)
class AccessFilter:
    """The caller's principals and groups. A chunk matches when its ACL shares at least one of them;
    with neither, nothing matches (never everything)."""

    principals: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def admits(self, acl_principals: Sequence[str], acl_groups: Sequence[str]) -> bool:
        return bool(set(self.principals) & set(acl_principals) or set(self.groups) & set(acl_groups))


class ChunkStore(Protocol):
    """Chunks and document states of one index generation, partitioned by tenant.

    Every method takes the tenant explicitly; nothing of one tenant is ever visible through another.
    Writes are idempotent upserts by id (a replayed batch changes nothing).
    """

    chunks_name: str

    def ensure_schema(self) -> None:
        """Create the collections if missing (idempotent)."""

    def ensure_tenant(self, tenant: str) -> None:
        """Create the tenant if missing and make it active (idempotent)."""

    def has_tenant(self, tenant: str) -> bool:
        """Whether the tenant exists (a tenant with no data may not)."""
        ...

    def get_state(self, tenant: str, document_id: str) -> DocumentState | None:
        """The document's state, or None when it was never indexed or was removed."""

    def get_states(self, tenant: str, document_ids: Sequence[str]) -> dict[str, DocumentState]:
        """States of those documents that have one, by document id (missing ones are absent)."""
        ...

    def put_state(self, tenant: str, state: DocumentState) -> None:
        """Insert or replace the document's state."""

    def delete_state(self, tenant: str, document_id: str) -> None:
        """Remove the document's state (no error when there is none)."""

    def list_states(self, tenant: str, limit: int = 10_000) -> list[DocumentState]:
        """Every document state of the tenant, up to `limit`."""
        ...

    def write_chunks(self, tenant: str, records: Sequence[ChunkRecord], vectors: np.ndarray) -> None:
        """Upsert chunks by id with one vector each (row i belongs to records[i])."""

    def delete_chunks(self, tenant: str, chunk_ids: Sequence[str]) -> int:
        """Delete these chunks; returns how many existed. Unknown ids are ignored."""
        ...

    def chunk_ids_of(self, tenant: str, document_id: str, version: str | None = None) -> list[str]:
        """Ids of the document's stored chunks (of one source version when given)."""
        ...

    def update_acl(
        self, tenant: str, chunk_ids: Sequence[str], principals: Sequence[str], groups: Sequence[str]
    ) -> None:
        """Replace the ACL of these chunks (content and vectors stay)."""

    def document_chunks(self, tenant: str, document_id: str) -> list[dict[str, Any]]:
        """The document's chunks as property dicts (with `chunk_id`), in position order."""
        ...

    def count(self, tenant: str) -> int:
        """Number of chunks of the tenant (0 for an unknown tenant)."""
        ...

    def search(
        self,
        tenant: str,
        query: str,
        vector: Sequence[float] | None,
        *,
        limit: int,
        acl: AccessFilter | None,
        filters: dict[str, str] | None = None,
        mode: str = "hybrid",
        alpha: float = 0.5,
        fusion: str = "relative_score",
    ) -> list[SearchHit]:
        """BM25 (`mode="bm25"`), dense or hybrid search in one tenant, best first, at most `limit`.

        `acl` is applied inside the search: a chunk the caller may not read is never a candidate, so it
        can neither be returned nor push a readable chunk out of the top `limit`. `acl=None` (tests
        only) applies no access filter. `filters` are exact matches on FILTERABLE fields; any other key
        raises ValueError. When `vector` is given each hit carries `relevance` (cosine to the query).
        """
        ...
