"""The vector store: Weaviate multi-tenant collections, one tenant per customer tenant.

Per index generation there are two collections: `<prefix>_<generation>` holds chunks (text, vector,
source version, owner, ACL, lineage), `<documents>_<generation>` holds one state object per document
(the live version and its chunk ids). Replacing a document writes the new version's chunks, flips the state
object (one object write, atomic), then deletes the old chunks; readers consult the state, so they see one
version at a time. All calls are synchronous (weaviate-client v4); workers call them in a thread.

`WeaviateStore` implements `ragstream.ports.ChunkStore` (the contract suite in `tests/contract/` runs
against it and the in-memory store); no Weaviate type leaves this module through it.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import weaviate
import weaviate.exceptions as wexc
from weaviate.classes.config import Configure, DataType, Property, Tokenization
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter, HybridFusion, MetadataQuery
from weaviate.classes.tenants import Tenant, TenantActivityStatus
from weaviate.collections import Collection

from ragstream import names
from ragstream.ports.store import FILTERABLE, AccessFilter, ChunkRecord, DocumentState, SearchHit
from ragstream.settings import Settings

NS = uuid.UUID("6f1c3a52-7d0e-4b8e-9a8c-3b2f1d5e7a90")
MAX_FETCH = 10_000
# Errors that may pass once Weaviate is reachable again (the worker retries them).
STORE_TRANSIENT: tuple[type[BaseException], ...] = (
    wexc.WeaviateConnectionError,
    wexc.WeaviateTimeoutError,
    wexc.UnexpectedStatusCodeError,
    wexc.WeaviateQueryError,
    wexc.WeaviateBatchError,
    ConnectionError,
    TimeoutError,
)


def _field(name: str, dt: DataType = DataType.TEXT, **kw: Any) -> Property:
    return Property(
        name=name,
        data_type=dt,
        tokenization=Tokenization.FIELD,
        index_searchable=False,
        index_filterable=True,
        **kw,
    )


CHUNK_PROPERTIES = [
    Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
    Property(name="title", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
    Property(name="heading", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
    _field("document_id"),
    _field("source_id"),
    _field("source_version"),
    _field("owner"),
    _field("acl_principals", DataType.TEXT_ARRAY),
    _field("acl_groups", DataType.TEXT_ARRAY),
    _field("normalizer_version"),
    _field("policy_hash"),
    _field("embedding_model"),
    _field("generation"),
    _field("content_sha256"),
    Property(name="position", data_type=DataType.INT, index_filterable=True),
    Property(name="ingested_at", data_type=DataType.DATE, index_filterable=True, index_range_filters=True),
]
STATE_PROPERTIES = [
    _field("document_id"),
    _field("live_version"),
    _field("content_sha256"),
    _field("policy_hash"),
    _field("embedding_model"),
    _field("normalizer_version"),
    _field("chunk_ids", DataType.TEXT_ARRAY),
    _field("acl_principals", DataType.TEXT_ARRAY),
    _field("acl_groups", DataType.TEXT_ARRAY),
    _field("source_id"),
    _field("owner"),
    _field("title"),
    _field("generation"),
    Property(name="indexed_at", data_type=DataType.DATE),
    Property(name="source_occurred_at", data_type=DataType.DATE),
]


SEARCH_MODES = frozenset({"bm25", "dense", "hybrid"})


def state_uuid(document_id: str) -> str:
    return str(uuid.uuid5(NS, f"state/{document_id}"))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    # Weaviate returns the vector as written (not normalized), so both norms are divided out here.
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(np.dot(a, b) / (na * nb)) if na and nb else 0.0


def canonical_ids(chunk_ids: Sequence[str]) -> list[str]:
    """Chunk ids in canonical UUID form. Weaviate answers ids in this form but matches id filters against
    the form that was written, so every id is canonical before it reaches Weaviate, on writes and reads."""
    return [str(uuid.UUID(c)) for c in chunk_ids]


def _chunk_dict(obj: Any) -> dict[str, Any]:
    return {"chunk_id": str(obj.uuid), **obj.properties}


class WeaviateStore:
    """`ChunkStore` over two multi-tenant Weaviate collections (chunks, document states)."""

    def __init__(self, client: weaviate.WeaviateClient, chunks: str, documents: str) -> None:
        self.client = client
        self.chunks_name = chunks
        self.documents_name = documents
        self._tenants: set[str] = set()
        # Readers' positive tenant lookups (monotonic time seen): two REST calls per query otherwise.
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    # --- schema and tenants -------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        for name, props in ((self.chunks_name, CHUNK_PROPERTIES), (self.documents_name, STATE_PROPERTIES)):
            if self.client.collections.exists(name):
                continue
            try:
                self.client.collections.create(
                    name,
                    properties=props,
                    multi_tenancy_config=Configure.multi_tenancy(enabled=True, auto_tenant_creation=False),
                    vector_config=Configure.Vectors.self_provided(
                        vector_index_config=Configure.VectorIndex.hnsw(
                            distance_metric=weaviate.classes.config.VectorDistances.COSINE
                        )
                    )
                    if name == self.chunks_name
                    else Configure.Vectors.self_provided(),
                    inverted_index_config=Configure.inverted_index(index_null_state=False),
                )
            except weaviate.exceptions.UnexpectedStatusCodeError as exc:
                if "already exists" not in str(exc):
                    raise

    def ensure_tenant(self, tenant: str) -> None:
        if tenant in self._tenants:
            return
        with self._lock:
            # Documents first: `has_tenant` looks at the chunks collection, so a reader that sees the
            # tenant there can always read its document states too.
            for name in (self.documents_name, self.chunks_name):
                coll = self.client.collections.use(name)
                existing = coll.tenants.get_by_names([tenant])
                if tenant not in existing:
                    coll.tenants.create([Tenant(name=tenant, activity_status=TenantActivityStatus.ACTIVE)])
            self._tenants.add(tenant)

    def has_tenant(self, tenant: str, ttl_s: float = 10.0) -> bool:
        """Whether the tenant's shard exists. A positive answer is reused for `ttl_s` (tenants are
        created once and rarely removed); a negative one never is, so a new tenant is found at once."""
        if tenant in self._tenants or time.monotonic() - self._seen.get(tenant, -1e9) < ttl_s:
            return True
        if not self.client.collections.exists(self.chunks_name):
            return False
        found = tenant in self.client.collections.use(self.chunks_name).tenants.get_by_names([tenant])
        if found:
            self._seen[tenant] = time.monotonic()
        return found

    def _chunks(self, tenant: str) -> Collection[Any, Any]:
        return self.client.collections.use(self.chunks_name).with_tenant(tenant)

    def _states(self, tenant: str) -> Collection[Any, Any]:
        return self.client.collections.use(self.documents_name).with_tenant(tenant)

    # --- documents ------------------------------------------------------------------------------------
    # Reads first ask `has_tenant` (cached when positive): Weaviate answers "tenant not found" with an
    # error, the contract with an empty result.
    def get_state(self, tenant: str, document_id: str) -> DocumentState | None:
        if not self.has_tenant(tenant):
            return None
        obj = self._states(tenant).query.fetch_object_by_id(state_uuid(document_id))
        if obj is None:
            return None
        return DocumentState.model_validate(obj.properties)

    def get_states(self, tenant: str, document_ids: Sequence[str]) -> dict[str, DocumentState]:
        ids = sorted(set(document_ids))
        if not ids or not self.has_tenant(tenant):
            return {}
        res = self._states(tenant).query.fetch_objects(
            filters=Filter.by_property("document_id").contains_any(ids), limit=len(ids)
        )
        return {o.properties["document_id"]: DocumentState.model_validate(o.properties) for o in res.objects}

    def put_state(self, tenant: str, state: DocumentState) -> None:
        props = state.model_dump(mode="json", exclude_none=True)
        props["chunk_ids"] = list(state.chunk_ids)
        props["acl_principals"] = list(state.acl_principals)
        props["acl_groups"] = list(state.acl_groups)
        coll, sid = self._states(tenant), state_uuid(state.document_id)
        if coll.data.exists(sid):
            coll.data.replace(uuid=sid, properties=props)
        else:
            coll.data.insert(properties=props, uuid=sid)

    def delete_state(self, tenant: str, document_id: str) -> None:
        if self.has_tenant(tenant):
            self._states(tenant).data.delete_by_id(state_uuid(document_id))

    def list_states(self, tenant: str, limit: int | None = MAX_FETCH) -> list[DocumentState]:
        if not self.has_tenant(tenant):
            return []
        if limit is not None and limit <= MAX_FETCH:
            res = self._states(tenant).query.fetch_objects(limit=limit)
            return [DocumentState.model_validate(o.properties) for o in res.objects]
        # Past the server's query maximum, page with the cursor.
        every = self._states(tenant).iterator(cache_size=1000)
        return [DocumentState.model_validate(o.properties) for o in itertools.islice(every, limit)]

    # --- chunks ---------------------------------------------------------------------------------------
    def write_chunks(self, tenant: str, records: Sequence[ChunkRecord], vectors: np.ndarray) -> None:
        """Upsert by deterministic id: a replay overwrites the same objects, never duplicates."""
        if not records:
            return
        objects = []
        for rec, vec in zip(records, vectors, strict=True):
            props = rec.model_dump(mode="json", exclude={"chunk_id"}, exclude_none=True)
            props["acl_principals"] = list(rec.acl_principals)
            props["acl_groups"] = list(rec.acl_groups)
            objects.append(
                DataObject(properties=props, uuid=str(uuid.UUID(rec.chunk_id)), vector=vec.tolist())
            )
        self._insert_many(tenant, objects, "chunk writes")

    def _insert_many(self, tenant: str, objects: list[DataObject], what: str) -> None:
        """One synchronous gRPC batch call per slice (the batch context manager costs ~1 s per use)."""
        coll = self._chunks(tenant)
        for start in range(0, len(objects), 200):
            res = coll.data.insert_many(objects[start : start + 200])
            if res.has_errors:
                first = next(iter(res.errors.values()))
                # A Weaviate error, so the server's words class it (ragstream.adapters.errors): "no write
                # replica found" during a restart is transient, a bad property permanent.
                raise wexc.WeaviateBatchError(f"weaviate rejected {len(res.errors)} {what}: {first.message}")

    def delete_chunks(self, tenant: str, chunk_ids: Sequence[str]) -> int:
        ids = canonical_ids(chunk_ids)
        if not ids or not self.has_tenant(tenant):
            return 0
        deleted = 0
        for start in range(0, len(ids), 500):
            res = self._chunks(tenant).data.delete_many(
                where=Filter.by_id().contains_any(ids[start : start + 500])
            )
            deleted += res.successful
        return deleted

    def chunk_ids_of(self, tenant: str, document_id: str, version: str | None = None) -> list[str]:
        if not self.has_tenant(tenant):
            return []
        f = Filter.by_property("document_id").equal(document_id)
        if version is not None:
            f = f & Filter.by_property("source_version").equal(version)
        res = self._chunks(tenant).query.fetch_objects(filters=f, limit=MAX_FETCH, return_properties=[])
        return [str(o.uuid) for o in res.objects]

    def get_chunks(self, tenant: str, chunk_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not chunk_ids or not self.has_tenant(tenant):
            return {}
        return {str(o.uuid): _chunk_dict(o) for o in self._fetch(tenant, chunk_ids)}

    def iter_chunks(self, tenant: str) -> Iterator[dict[str, Any]]:
        if not self.has_tenant(tenant):
            return iter(())
        return (_chunk_dict(o) for o in self._chunks(tenant).iterator(cache_size=1000))

    def _fetch(self, tenant: str, chunk_ids: Sequence[str], with_vectors: bool = False) -> list[Any]:
        """Weaviate objects by id, 500 per call (this module's own use: callers get dicts)."""
        ids = canonical_ids(chunk_ids)
        out: list[Any] = []
        for start in range(0, len(ids), 500):
            res = self._chunks(tenant).query.fetch_objects(
                filters=Filter.by_id().contains_any(ids[start : start + 500]),
                limit=500,
                include_vector=with_vectors,
            )
            out.extend(res.objects)
        return out

    def update_acl(
        self, tenant: str, chunk_ids: Sequence[str], principals: Sequence[str], groups: Sequence[str]
    ) -> int:
        """Rewrite ACL properties in place (same vectors): no re-embedding."""
        if not chunk_ids or not self.has_tenant(tenant):
            return 0
        objs = self._fetch(tenant, chunk_ids, with_vectors=True)
        objects = []
        for o in objs:
            props = dict(o.properties)
            props["acl_principals"] = list(principals)
            props["acl_groups"] = list(groups)
            props = {
                k: (v.isoformat() if isinstance(v, datetime) else v)
                for k, v in props.items()
                if v is not None
            }
            objects.append(DataObject(properties=props, uuid=o.uuid, vector=o.vector["default"]))
        self._insert_many(tenant, objects, "ACL updates")
        return len(objs)

    def document_chunks(self, tenant: str, document_id: str) -> list[dict[str, Any]]:
        """The live version's chunks of one document, as a reader sees them."""
        if not self.has_tenant(tenant):
            return []
        for _ in range(3):
            state = self.get_state(tenant, document_id)
            if state is None:
                return []
            objs = self._fetch(tenant, state.chunk_ids)
            if len(objs) == len(state.chunk_ids):
                return sorted(map(_chunk_dict, objs), key=lambda c: c["position"])
            # The state flipped between our two reads (old chunks already deleted): read again.
        return []

    def count(self, tenant: str) -> int:
        if not self.has_tenant(tenant):
            return 0
        agg = self._chunks(tenant).aggregate.over_all(total_count=True)
        return int(agg.total_count or 0)

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
        """See `ChunkStore.search`: the ACL becomes a where-filter Weaviate applies inside the search."""
        where = search_filter(acl, filters or {})  # the caller's mistakes raise before any I/O
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {mode!r}; one of {sorted(SEARCH_MODES)}")
        if mode == "dense" and vector is None:
            raise ValueError("a dense search needs a query vector")
        if not self.has_tenant(tenant):
            return []
        q_vec = np.asarray(vector, dtype=np.float32) if vector is not None else None
        # Vectors come back when asked for, and whenever `relevance` needs them.
        include = with_vectors or vector is not None
        # Plain floats: callers pass numpy rows too, which gRPC (and `or`) cannot take.
        q_list = None if q_vec is None else [float(x) for x in q_vec]
        res = self._query(tenant, query, q_list, mode, limit, where, alpha, fusion, include)
        return [self._hit(o, mode, q_vec, with_vectors) for o in res.objects]

    def _query(
        self,
        tenant: str,
        query: str,
        vector: list[float] | None,
        mode: str,
        limit: int,
        where: Any,
        alpha: float,
        fusion: str,
        include_vector: bool,
    ) -> Any:
        q = self._chunks(tenant).query
        common: dict[str, Any] = {
            "limit": limit,
            "filters": where,
            "return_metadata": MetadataQuery(score=True, distance=True),
            "include_vector": include_vector,
        }
        if mode == "bm25":
            return q.bm25(query=query, query_properties=["title", "heading", "text"], **common)
        if mode == "dense":
            return q.near_vector(near_vector=vector or [], **common)
        return q.hybrid(
            query=query,
            vector=vector,
            alpha=alpha,
            query_properties=["title", "heading", "text"],
            fusion_type=HybridFusion.RELATIVE_SCORE if fusion == "relative_score" else HybridFusion.RANKED,
            **common,
        )

    @staticmethod
    def _hit(o: Any, mode: str, q_vec: np.ndarray | None, with_vectors: bool) -> SearchHit:
        stored = o.vector.get("default") if o.vector else None
        vec = np.asarray(stored, dtype=np.float32) if stored is not None else None
        if mode == "dense":
            # near_vector reports no score (0.0): the contract's dense score is the cosine.
            score = 1.0 - float(o.metadata.distance if o.metadata.distance is not None else 1.0)
        else:
            score = float(o.metadata.score or 0.0)
        return SearchHit(
            chunk_id=str(o.uuid),
            score=score,
            properties=dict(o.properties),
            relevance=_cosine(vec, q_vec) if vec is not None and q_vec is not None else None,
            vector=tuple(float(x) for x in vec) if with_vectors and vec is not None else None,
        )


# --- search ---------------------------------------------------------------------------------------------


def acl_filter(principals: Sequence[str], groups: Sequence[str]) -> Any:
    """Chunk principals/groups ∩ caller's, evaluated by Weaviate inside the search (never after it)."""
    parts = []
    if principals:
        parts.append(Filter.by_property("acl_principals").contains_any(list(principals)))
    if groups:
        parts.append(Filter.by_property("acl_groups").contains_any(list(groups)))
    if not parts:
        # No principal at all: match nothing rather than everything.
        return Filter.by_property("acl_principals").contains_any(["\x00no-principal"])
    return Filter.any_of(parts) if len(parts) > 1 else parts[0]


def search_filter(acl: AccessFilter | None, filters: dict[str, str]) -> Any | None:
    """The where-filter of one search: the caller's ACL and the request's exact filters, all of them."""
    where = acl_filter(acl.principals, acl.groups) if acl is not None else None
    extra = request_filter(filters)
    if extra is None:
        return where
    return extra if where is None else Filter.all_of([where, extra])


def request_filter(filters: dict[str, str]) -> Any | None:
    unknown = set(filters) - FILTERABLE
    if unknown:
        raise ValueError(f"unsupported filter fields: {sorted(unknown)}; allowed: {sorted(FILTERABLE)}")
    parts = [Filter.by_property(k).equal(v) for k, v in sorted(filters.items())]
    return Filter.all_of(parts) if len(parts) > 1 else (parts[0] if parts else None)


def drop_index(settings: Settings) -> None:
    """Delete the configured generation's chunk and document-state collections (tests, benchmarks)."""
    from ragstream.adapters.weaviate_client import connect

    client = connect(settings.weaviate)
    try:
        for name in names.collections(settings.index):
            client.collections.delete(name)
    finally:
        client.close()


def open_store(settings: Settings) -> tuple[weaviate.WeaviateClient, WeaviateStore]:
    """A client and the store of the configured generation (the caller closes the client)."""
    from ragstream.adapters.weaviate_client import connect

    client = connect(settings.weaviate)
    return client, WeaviateStore(client, *names.collections(settings.index))
