"""The chunk store in memory: the whole `ChunkStore` contract without Weaviate, for unit and component tests.

It passes the same contract suite as the Weaviate store (`tests/contract/test_chunk_store.py`), so a test
that runs on it exercises what production would do: writes need an ensured tenant, chunk ids must be
UUIDs, the access filter is applied before ranking and the limit, unknown filter fields are refused.
Ranking imitates Weaviate's where it is cheap to (word tokenization, English stop words, BM25 with
k1=1.2 and b=0.75, relative-score and ranked fusion); scores are comparable within one result list only.
Thread-safe: workers call the store from threads (`asyncio.to_thread`).
"""

from __future__ import annotations

import math
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragstream.ports.store import FILTERABLE, AccessFilter, ChunkRecord, DocumentState, SearchHit

MODES = frozenset({"bm25", "dense", "hybrid"})
# Weaviate's "en" stop-word preset (Lucene's list): removed from queries, not from the index.
_EN_STOP_WORDS = (
    "a an and are as at be but by for if in into is it no not of on or such that the their then there "
    "these they this to was will with"
)
STOP_WORDS = frozenset(_EN_STOP_WORDS.split())
BM25_K1, BM25_B = 1.2, 0.75
RRF_K = 60  # the rank offset of reciprocal-rank fusion (Weaviate's and the literature's)
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """Weaviate's `word` tokenization: runs of letters and digits, lowercased."""
    return _WORD.findall(text.lower())


def canonical_id(chunk_id: str) -> str:
    """The canonical form of a UUID chunk id; anything else is refused, as Weaviate refuses it."""
    try:
        return str(uuid.UUID(chunk_id))
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f"chunk id is not a UUID: {chunk_id!r}") from exc


def _lookup_id(chunk_id: str) -> str:
    """A chunk id to look up by: canonical when it is a UUID; anything else can match nothing."""
    try:
        return canonical_id(chunk_id)
    except ValueError:
        return chunk_id


@dataclass
class _Chunk:
    record: ChunkRecord
    vector: np.ndarray
    terms: Counter[str]

    def properties(self) -> dict[str, Any]:
        """The record as Weaviate returns it: every property, arrays as lists, no `chunk_id`."""
        props = self.record.model_dump(exclude={"chunk_id"})
        props["acl_principals"] = list(self.record.acl_principals)
        props["acl_groups"] = list(self.record.acl_groups)
        return props

    def as_dict(self) -> dict[str, Any]:
        return {"chunk_id": self.record.chunk_id, **self.properties()}


@dataclass
class _Tenant:
    chunks: dict[str, _Chunk] = field(default_factory=dict)
    states: dict[str, DocumentState] = field(default_factory=dict)


def _index_terms(record: ChunkRecord) -> Counter[str]:
    # The searchable properties, as the Weaviate store's query_properties (title, heading, text).
    return Counter(words(f"{record.title} {record.heading} {record.text}"))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na and nb else 0.0


def _check_filters(filters: dict[str, str] | None) -> dict[str, str]:
    unknown = set(filters or {}) - FILTERABLE
    if unknown:
        raise ValueError(f"unsupported filter fields: {sorted(unknown)}; allowed: {sorted(FILTERABLE)}")
    return dict(filters or {})


def _min_max(scores: dict[str, float]) -> dict[str, float]:
    """Scores scaled to [0, 1] within their own result set (Weaviate's relative-score fusion)."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    return {k: (v - lo) / (hi - lo) if hi > lo else 1.0 for k, v in scores.items()}


def _ranks(scores: dict[str, float]) -> dict[str, int]:
    return {k: i for i, k in enumerate(sorted(scores, key=lambda k: (-scores[k], k)))}


def fuse(dense: dict[str, float], lexical: dict[str, float], alpha: float, fusion: str) -> dict[str, float]:
    """Hybrid scores: `alpha` weighs the dense side. "relative_score": a convex combination of the two
    min-max-normalized score sets; "ranked": reciprocal-rank fusion. A chunk absent from one side gets
    nothing from it."""
    if fusion == "ranked":
        rd, rl = _ranks(dense), _ranks(lexical)
        parts = ((rd, alpha), (rl, 1.0 - alpha))
        return {
            k: sum(w / (RRF_K + r[k] + 1) for r, w in parts if k in r) for k in dense.keys() | lexical.keys()
        }
    nd, nl = _min_max(dense), _min_max(lexical)
    return {k: alpha * nd.get(k, 0.0) + (1.0 - alpha) * nl.get(k, 0.0) for k in dense.keys() | lexical.keys()}


class MemoryChunkStore:
    """`ChunkStore` in memory: one `_Tenant` per tenant, guarded by one lock."""

    def __init__(self, chunks_name: str = "MemChunks", documents_name: str = "MemDocuments") -> None:
        self.chunks_name = chunks_name
        self.documents_name = documents_name
        self._tenants: dict[str, _Tenant] = {}
        self._lock = threading.RLock()

    # --- schema and tenants -------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Nothing to create in memory (idempotent, as the contract asks)."""

    def ensure_tenant(self, tenant: str) -> None:
        with self._lock:
            self._tenants.setdefault(tenant, _Tenant())

    def has_tenant(self, tenant: str) -> bool:
        return tenant in self._tenants

    def _read(self, tenant: str) -> _Tenant:
        """The tenant's data for a read: an unknown tenant reads as empty (never created by reading)."""
        return self._tenants.get(tenant) or _Tenant()

    def _write(self, tenant: str) -> _Tenant:
        found = self._tenants.get(tenant)
        if found is None:
            # Weaviate refuses writes to a tenant that was never created (no auto-creation).
            raise KeyError(f"tenant not found: {tenant!r} (ensure_tenant first)")
        return found

    # --- documents ------------------------------------------------------------------------------------
    def get_state(self, tenant: str, document_id: str) -> DocumentState | None:
        with self._lock:
            return self._read(tenant).states.get(document_id)

    def get_states(self, tenant: str, document_ids: Sequence[str]) -> dict[str, DocumentState]:
        with self._lock:
            states = self._read(tenant).states
            return {d: states[d] for d in set(document_ids) if d in states}

    def put_state(self, tenant: str, state: DocumentState) -> None:
        with self._lock:
            self._write(tenant).states[state.document_id] = state

    def delete_state(self, tenant: str, document_id: str) -> None:
        with self._lock:
            self._read(tenant).states.pop(document_id, None)

    def list_states(self, tenant: str, limit: int | None = 10_000) -> list[DocumentState]:
        with self._lock:
            states = list(self._read(tenant).states.values())
        return states if limit is None else states[:limit]

    # --- chunks ---------------------------------------------------------------------------------------
    def write_chunks(self, tenant: str, records: Sequence[ChunkRecord], vectors: np.ndarray) -> None:
        if len(records) != len(vectors):
            raise ValueError(f"{len(records)} records but {len(vectors)} vectors")
        # Validate the whole batch before touching the store, so a bad id leaves nothing half-written.
        rows = [
            (rec.model_copy(update={"chunk_id": canonical_id(rec.chunk_id)}), np.array(vec, dtype=np.float32))
            for rec, vec in zip(records, vectors, strict=True)
        ]
        with self._lock:
            chunks = self._write(tenant).chunks
            for rec, vec in rows:
                chunks[rec.chunk_id] = _Chunk(rec, vec, _index_terms(rec))

    def delete_chunks(self, tenant: str, chunk_ids: Sequence[str]) -> int:
        ids = {canonical_id(c) for c in chunk_ids}
        with self._lock:
            chunks = self._read(tenant).chunks
            return sum(chunks.pop(c, None) is not None for c in ids)

    def chunk_ids_of(self, tenant: str, document_id: str, version: str | None = None) -> list[str]:
        with self._lock:
            return [
                cid
                for cid, c in self._read(tenant).chunks.items()
                if c.record.document_id == document_id
                and (version is None or c.record.source_version == version)
            ]

    def get_chunks(self, tenant: str, chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        ids = {canonical_id(c) for c in chunk_ids}
        with self._lock:
            chunks = self._read(tenant).chunks
            return {c: chunks[c].as_dict() for c in ids if c in chunks}

    def iter_chunks(self, tenant: str) -> Iterator[dict[str, Any]]:
        with self._lock:  # a snapshot: writers may go on while the caller iterates
            rows = [c.as_dict() for c in self._read(tenant).chunks.values()]
        return iter(rows)

    def update_acl(
        self, tenant: str, chunk_ids: Sequence[str], principals: Sequence[str], groups: Sequence[str]
    ) -> int:
        acl = {"acl_principals": tuple(principals), "acl_groups": tuple(groups)}
        ids = {canonical_id(c) for c in chunk_ids}
        with self._lock:
            chunks = self._read(tenant).chunks
            found = [c for c in ids if c in chunks]
            for c in found:
                chunks[c].record = chunks[c].record.model_copy(update=acl)
            return len(found)

    def document_chunks(self, tenant: str, document_id: str) -> list[dict[str, Any]]:
        with self._lock:
            data = self._read(tenant)
            state = data.states.get(document_id)
            if state is None:
                return []
            found = [data.chunks[c] for c in map(_lookup_id, state.chunk_ids) if c in data.chunks]
        return [c.as_dict() for c in sorted(found, key=lambda c: c.record.position)]

    def count(self, tenant: str) -> int:
        with self._lock:
            return len(self._read(tenant).chunks)

    def vector_of(self, tenant: str, chunk_id: str) -> np.ndarray | None:
        """The stored vector of one chunk (an inspection aid for tests; not part of the port)."""
        with self._lock:
            found = self._read(tenant).chunks.get(canonical_id(chunk_id))
            return None if found is None else found.vector.copy()

    # --- search ---------------------------------------------------------------------------------------
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
        """See `ChunkStore.search`: candidates are filtered (ACL, `filters`) first, then ranked and cut."""
        exact = _check_filters(filters)
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}; one of {sorted(MODES)}")
        if mode == "dense" and vector is None:
            raise ValueError("a dense search needs a query vector")
        q_vec = None if vector is None else np.asarray(vector, dtype=np.float32)
        with self._lock:
            data = self._read(tenant)
            # The filter decides the candidates; only then are they ranked and cut to `limit`.
            candidates = [c for c in data.chunks.values() if _admitted(c, acl, exact)]
            scores = self._rank(candidates, _bm25_stats(data, query), q_vec, mode, alpha, fusion)
            by_id = {c.record.chunk_id: c for c in candidates}
            best = sorted(scores, key=lambda k: (-scores[k], k))[: max(0, limit)]
            return [self._hit(by_id[k], scores[k], q_vec, with_vectors) for k in best]

    @staticmethod
    def _rank(
        candidates: list[_Chunk],
        stats: _Bm25Stats,
        q_vec: np.ndarray | None,
        mode: str,
        alpha: float,
        fusion: str,
    ) -> dict[str, float]:
        lexical = _bm25(candidates, stats) if mode != "dense" else {}
        if mode == "bm25" or q_vec is None:
            return lexical
        dense = {c.record.chunk_id: _cosine(c.vector, q_vec) for c in candidates}
        return dense if mode == "dense" else fuse(dense, lexical, alpha, fusion)

    @staticmethod
    def _hit(chunk: _Chunk, score: float, q_vec: np.ndarray | None, with_vectors: bool) -> SearchHit:
        return SearchHit(
            chunk_id=chunk.record.chunk_id,
            score=score,
            properties=chunk.properties(),
            relevance=None if q_vec is None else _cosine(chunk.vector, q_vec),
            vector=tuple(float(x) for x in chunk.vector) if with_vectors else None,
        )


def _admitted(chunk: _Chunk, acl: AccessFilter | None, exact: dict[str, str]) -> bool:
    rec = chunk.record
    if acl is not None and not acl.admits(rec.acl_principals, rec.acl_groups):
        return False
    return all(str(getattr(rec, k)) == v for k, v in exact.items())


@dataclass(frozen=True)
class _Bm25Stats:
    """Corpus statistics of the query's terms, over the whole tenant (as a Weaviate shard keeps them),
    not over the filtered candidates."""

    n_docs: int
    avg_len: float
    doc_freq: dict[str, int]


def _bm25_stats(data: _Tenant, query: str) -> _Bm25Stats:
    chunks = data.chunks.values()
    n_docs = len(data.chunks)
    avg_len = sum(c.terms.total() for c in chunks) / n_docs if n_docs else 0.0
    wanted = {t for t in words(query) if t not in STOP_WORDS}
    return _Bm25Stats(n_docs, avg_len, {t: sum(1 for c in chunks if t in c.terms) for t in wanted})


def _bm25(candidates: list[_Chunk], stats: _Bm25Stats) -> dict[str, float]:
    """Okapi BM25 of each candidate sharing a query term; candidates without one are not hits."""
    out: dict[str, float] = {}
    for c in candidates:
        length = c.terms.total()
        score = 0.0
        for term, df in stats.doc_freq.items():
            tf = c.terms.get(term, 0)
            if not tf:
                continue
            idf = math.log(1.0 + (stats.n_docs - df + 0.5) / (df + 0.5))
            norm = tf + BM25_K1 * (1.0 - BM25_B + BM25_B * length / (stats.avg_len or 1.0))
            score += idf * tf * (BM25_K1 + 1.0) / norm
        if score > 0.0:
            out[c.record.chunk_id] = score
    return out
