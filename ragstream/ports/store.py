"""The chunk store port: what indexing, retrieval and the second authorization check need from a store.

The Weaviate store (`ragstream.adapters.store.WeaviateStore`) and the in-memory one
(`ragstream.adapters.memory_store.MemoryChunkStore`) both implement it; `tests/contract/` holds the one
suite both must pass. The docstrings below are the contract.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
    """One search result. `score` orders the hits (higher is better); its scale depends on the mode."""

    model_config = ConfigDict(frozen=True)
    chunk_id: str
    score: float
    # The chunk's stored properties (those of `ChunkRecord`, without `chunk_id`).
    properties: dict[str, Any]
    # Cosine of the chunk's vector and the query vector (whenever the search was given a vector).
    relevance: float | None = None
    # The chunk's stored vector, only when the search asked for it (`with_vectors=True`).
    vector: tuple[float, ...] | None = None


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
    Writes are idempotent upserts by id (a replayed batch changes nothing). Chunk ids are UUID strings
    (the chunker derives them with uuid5); the store answers them in canonical lowercase form.
    Writes (`write_chunks`, `put_state`) need the tenant to exist (`ensure_tenant` first) and raise
    otherwise. Reading a tenant that does not exist is not an error: reads answer empty (None, {}, [],
    0) and deletes count 0, so a reader never has to create a tenant to find out it is empty.
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

    def list_states(self, tenant: str, limit: int | None = 10_000) -> list[DocumentState]:
        """Every document state of the tenant (in no set order), up to `limit`; `None`: all of them."""
        ...

    def write_chunks(self, tenant: str, records: Sequence[ChunkRecord], vectors: np.ndarray) -> None:
        """Upsert chunks by id with one vector each (row i belongs to records[i])."""

    def delete_chunks(self, tenant: str, chunk_ids: Sequence[str]) -> int:
        """Delete these chunks; returns how many existed. Unknown ids are ignored."""
        ...

    def chunk_ids_of(self, tenant: str, document_id: str, version: str | None = None) -> list[str]:
        """Ids of the document's stored chunks, any version (only `version`'s when given), whether or not
        its state names them (an interrupted replacement leaves chunks only this finds)."""
        ...

    def get_chunks(self, tenant: str, chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored chunks by id, as property dicts with `chunk_id` (unknown ids are absent)."""
        ...

    def iter_chunks(self, tenant: str) -> Iterator[dict[str, Any]]:
        """Every stored chunk of the tenant, any version, in no set order, as property dicts with
        `chunk_id` (audits and tests; nothing for an unknown tenant)."""
        ...

    def update_acl(
        self, tenant: str, chunk_ids: Sequence[str], principals: Sequence[str], groups: Sequence[str]
    ) -> int:
        """Replace the ACL of these chunks (content, other properties and vectors stay); returns how many
        existed. Unknown ids are ignored."""
        ...

    def document_chunks(self, tenant: str, document_id: str) -> list[dict[str, Any]]:
        """The live version's chunks of the document (those its state names) as property dicts with
        `chunk_id`, in position order, as a reader sees them; [] when the document has no state."""
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
        with_vectors: bool = False,
    ) -> list[SearchHit]:
        """BM25 (`mode="bm25"`), dense or hybrid search in one tenant, best first, at most `limit`.

        `acl` is applied inside the search: a chunk the caller may not read is never a candidate, so it
        can neither be returned nor push a readable chunk out of the top `limit`. `acl=None` (tests
        only) applies no access filter. `filters` are exact matches on FILTERABLE fields; any other key
        raises ValueError (so does another mode, or `mode="dense"` without a vector).

        Scores are non-increasing down the list. BM25 returns only chunks sharing a term with the query
        (English stop words do not count); dense ranks every candidate by cosine and its `score` is that
        cosine; hybrid fuses both (`alpha` weighs the dense side; `fusion` is "relative_score", a convex
        combination of min-max-normalized scores, or "ranked", reciprocal-rank fusion). When `vector`
        is given each hit carries `relevance` (its cosine to the query, whatever the mode);
        `with_vectors` adds the chunk's stored vector.
        """
        ...
