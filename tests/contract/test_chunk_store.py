"""The `ChunkStore` contract, one suite for every store (after Haystack's DocumentStore testing mixins).

`ChunkStoreContract` holds the tests; each store's subclass provides the `store` fixture: a fresh store in
which the tenants `tenant` and `other` (unique per test) do not exist yet. The in-memory store always runs;
the Weaviate store runs against the real local Weaviate (`integration`), in collections of its own that
are dropped after the class. The docstrings of `ragstream.ports.store.ChunkStore` are what is tested.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from ragstream.adapters.memory_store import MemoryChunkStore
from ragstream.ports import FILTERABLE, AccessFilter, ChunkRecord, ChunkStore, DocumentState
from ragstream.settings import Settings

NS = uuid.UUID("0b9f5a4e-8c1d-4f7e-9a3b-2d6c8e1f4a70")
DIM = 8
MODES = ("bm25", "dense", "hybrid")
STAFF = AccessFilter(groups=("staff",))
PROPERTIES = set(ChunkRecord.model_fields) - {"chunk_id"}


def cid(doc: str, version: str = "v1", position: int = 0) -> str:
    return str(uuid.uuid5(NS, f"{doc}/{version}/{position}"))


def record(
    doc: str,
    position: int = 0,
    text: str = "",
    *,
    version: str = "v1",
    groups: tuple[str, ...] = ("staff",),
    principals: tuple[str, ...] = (),
    **extra: object,
) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=cid(doc, version, position),
        document_id=doc,
        position=position,
        text=text or f"{doc} chunk {position}",
        source_version=version,
        acl_groups=groups,
        acl_principals=principals,
        **extra,  # type: ignore[arg-type]
    )


def vec(*xs: float) -> np.ndarray:
    """A DIM-wide vector from its first components (the rest 0); deliberately not unit length."""
    out = np.zeros(DIM, dtype=np.float32)
    out[: len(xs)] = xs
    return out


def vectors(records: Sequence[ChunkRecord]) -> np.ndarray:
    """A distinct, non-zero vector per record (for tests where ranking by vector does not matter)."""
    return np.stack([vec(1.0, 0.1 * (i + 1), 0.05 * r.position) for i, r in enumerate(records)])


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def state(doc: str, chunk_ids: Sequence[str], version: str = "v1", **extra: object) -> DocumentState:
    return DocumentState(document_id=doc, live_version=version, chunk_ids=tuple(chunk_ids), **extra)  # type: ignore[arg-type]


def _differing(field: str, value: str, position: int) -> ChunkRecord:
    """A chunk whose FILTERABLE `field` is `value`, every other filterable field fixed."""
    doc, version = f"d{position}", "v0"
    extra = {"source_id": "s", "owner": "o", "policy_hash": "h"}
    if field == "document_id":
        doc = value
    elif field == "source_version":
        version = value
    else:
        extra[field] = value
    return record(doc, position, "common words", version=version, **extra)


class ChunkStoreContract:
    """The tests every `ChunkStore` must pass. Subclasses provide `store`."""

    @pytest.fixture
    def store(self) -> Iterator[ChunkStore]:
        raise NotImplementedError("a store's test class provides its own `store` fixture")

    @pytest.fixture
    def tenant(self, unique: str) -> str:
        return f"t{unique}"

    @pytest.fixture
    def other(self, unique: str) -> str:
        return f"u{unique}"

    def _write(self, store: ChunkStore, tenant: str, records: Sequence[ChunkRecord]) -> None:
        store.ensure_tenant(tenant)
        store.write_chunks(tenant, records, vectors(records))

    # --- schema and tenants -------------------------------------------------------------------------
    def test_schema_and_tenants_are_idempotent(self, store: ChunkStore, tenant: str) -> None:
        store.ensure_schema()
        store.ensure_schema()
        assert not store.has_tenant(tenant)
        store.ensure_tenant(tenant)
        store.ensure_tenant(tenant)
        assert store.has_tenant(tenant) and store.count(tenant) == 0

    def test_reading_an_unknown_tenant_is_empty_and_creates_nothing(
        self, store: ChunkStore, tenant: str
    ) -> None:
        some = cid("a")
        assert store.get_state(tenant, "a") is None
        assert store.get_states(tenant, ["a"]) == {}
        assert store.list_states(tenant) == [] and store.list_states(tenant, limit=None) == []
        assert store.count(tenant) == 0
        assert store.chunk_ids_of(tenant, "a") == []
        assert store.get_chunks(tenant, [some]) == {}
        assert list(store.iter_chunks(tenant)) == []
        assert store.document_chunks(tenant, "a") == []
        for mode in MODES:
            assert store.search(tenant, "anything", vec(1.0), limit=5, acl=None, mode=mode) == []
        assert store.delete_chunks(tenant, [some]) == 0
        assert store.update_acl(tenant, [some], ["p"], ["g"]) == 0
        store.delete_state(tenant, "a")
        assert not store.has_tenant(tenant)

    def test_writes_need_the_tenant(self, store: ChunkStore, tenant: str) -> None:
        with pytest.raises(Exception):  # noqa: B017 - each store raises its own error class
            store.write_chunks(tenant, [record("a")], vectors([record("a")]))
        with pytest.raises(Exception):  # noqa: B017
            store.put_state(tenant, state("a", [cid("a")]))
        assert not store.has_tenant(tenant) or store.count(tenant) == 0

    # --- chunks ---------------------------------------------------------------------------------------
    def test_write_is_an_idempotent_upsert_by_id(self, store: ChunkStore, tenant: str) -> None:
        recs = [record("a", i) for i in range(3)]
        self._write(store, tenant, recs)
        self._write(store, tenant, recs)  # a replayed batch changes nothing
        assert store.count(tenant) == 3
        assert sorted(store.chunk_ids_of(tenant, "a")) == sorted(r.chunk_id for r in recs)
        changed = recs[1].model_copy(update={"text": "rewritten text"})
        store.write_chunks(tenant, [changed], vectors([changed]))
        assert store.count(tenant) == 3
        assert store.get_chunks(tenant, [changed.chunk_id])[changed.chunk_id]["text"] == "rewritten text"

    def test_chunk_ids_come_back_in_canonical_form(self, store: ChunkStore, tenant: str) -> None:
        rec = record("a")
        self._write(store, tenant, [rec.model_copy(update={"chunk_id": rec.chunk_id.upper()})])
        assert store.chunk_ids_of(tenant, "a") == [rec.chunk_id]
        assert list(store.get_chunks(tenant, [rec.chunk_id])) == [rec.chunk_id]

    def test_properties_round_trip(self, store: ChunkStore, tenant: str) -> None:
        at = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
        rec = record(
            "a",
            4,
            "body text",
            title="Title",
            heading="H1 > H2",
            source_id="src",
            owner="olivia",
            principals=("alice",),
            groups=("staff", "eng"),
            normalizer_version="n1",
            policy_hash="p1",
            embedding_model="m1",
            generation="g1",
            content_sha256="abc",
            ingested_at=at,
        )
        self._write(store, tenant, [rec])
        got = store.get_chunks(tenant, [rec.chunk_id, cid("missing")])
        assert list(got) == [rec.chunk_id], "unknown ids are absent"
        props = got[rec.chunk_id]
        assert set(props) == PROPERTIES | {"chunk_id"}
        assert props["chunk_id"] == rec.chunk_id and props["position"] == 4 and props["title"] == "Title"
        assert props["heading"] == "H1 > H2" and props["owner"] == "olivia" and props["generation"] == "g1"
        assert list(props["acl_principals"]) == ["alice"] and sorted(props["acl_groups"]) == ["eng", "staff"]
        assert props["ingested_at"] == at
        (listed,) = store.iter_chunks(tenant)
        assert listed == props

    def test_delete_counts_only_chunks_that_existed(self, store: ChunkStore, tenant: str) -> None:
        recs = [record("a", i) for i in range(3)]
        self._write(store, tenant, recs)
        assert store.delete_chunks(tenant, []) == 0
        assert store.delete_chunks(tenant, [recs[0].chunk_id, recs[1].chunk_id, cid("nope")]) == 2
        assert store.delete_chunks(tenant, [recs[0].chunk_id]) == 0
        assert store.chunk_ids_of(tenant, "a") == [recs[2].chunk_id] and store.count(tenant) == 1

    def test_chunk_ids_of_sees_every_version_or_one(self, store: ChunkStore, tenant: str) -> None:
        old = [record("a", i, version="v1") for i in range(2)]
        new = [record("a", i, version="v2") for i in range(3)]
        self._write(store, tenant, [*old, *new, record("b")])
        store.put_state(tenant, state("a", [r.chunk_id for r in new], "v2"))
        assert sorted(store.chunk_ids_of(tenant, "a")) == sorted(r.chunk_id for r in old + new)
        assert sorted(store.chunk_ids_of(tenant, "a", "v1")) == sorted(r.chunk_id for r in old)
        assert store.chunk_ids_of(tenant, "a", "v9") == [] and store.chunk_ids_of(tenant, "zzz") == []
        assert {c["chunk_id"] for c in store.iter_chunks(tenant)} == {r.chunk_id for r in [*old, *new]} | {
            cid("b")
        }

    def test_document_chunks_are_the_live_version_in_position_order(
        self, store: ChunkStore, tenant: str
    ) -> None:
        old = [record("a", i, version="v1") for i in range(2)]
        live = [record("a", i, f"live {i}", version="v2") for i in (2, 0, 1)]  # written out of order
        self._write(store, tenant, [*old, *live])
        assert store.document_chunks(tenant, "a") == [], "no state: nothing to read"
        store.put_state(tenant, state("a", [r.chunk_id for r in live], "v2"))
        chunks = store.document_chunks(tenant, "a")
        assert [c["position"] for c in chunks] == [0, 1, 2]
        assert [c["text"] for c in chunks] == ["live 0", "live 1", "live 2"]
        assert [c["chunk_id"] for c in chunks] == [cid("a", "v2", i) for i in range(3)]

    def test_update_acl_replaces_the_acl_and_keeps_content_and_vectors(
        self, store: ChunkStore, tenant: str
    ) -> None:
        recs = [record("a", i, f"merger plan {i}") for i in range(2)]
        self._write(store, tenant, recs)
        before = store.get_chunks(tenant, [recs[0].chunk_id])[recs[0].chunk_id]
        n = store.update_acl(tenant, [recs[0].chunk_id, cid("nope")], ["bob"], ["board"])
        assert n == 1, "returns how many existed"
        after = store.get_chunks(tenant, [recs[0].chunk_id])[recs[0].chunk_id]
        assert list(after["acl_principals"]) == ["bob"] and list(after["acl_groups"]) == ["board"]
        assert {k: v for k, v in after.items() if not k.startswith("acl_")} == {
            k: v for k, v in before.items() if not k.startswith("acl_")
        }
        (hit,) = store.search(
            tenant,
            "merger",
            vectors(recs)[0],
            limit=5,
            acl=AccessFilter(groups=("board",)),
            with_vectors=True,
        )
        assert hit.chunk_id == recs[0].chunk_id and hit.vector is not None
        assert np.allclose(hit.vector, vectors(recs)[0], atol=1e-6), "the vector stays"
        staff = store.search(tenant, "merger", None, limit=5, acl=STAFF, mode="bm25")
        assert [h.chunk_id for h in staff] == [recs[1].chunk_id], "the old ACL no longer reads it"

    def test_count(self, store: ChunkStore, tenant: str) -> None:
        self._write(store, tenant, [record("a", i) for i in range(4)] + [record("b")])
        assert store.count(tenant) == 5

    # --- document states ------------------------------------------------------------------------------
    def test_states_put_replace_get_and_delete(self, store: ChunkStore, tenant: str) -> None:
        store.ensure_tenant(tenant)
        at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
        first = state("a", [cid("a")], acl_groups=("staff",), title="A", indexed_at=at)
        store.put_state(tenant, first)
        assert store.get_state(tenant, "a") == first
        second = state("a", [cid("a", "v2")], "v2", acl_principals=("alice",))
        store.put_state(tenant, second)
        assert store.get_state(tenant, "a") == second, "insert or replace"
        store.delete_state(tenant, "a")
        store.delete_state(tenant, "a")  # no error when there is none
        assert store.get_state(tenant, "a") is None

    def test_get_states_leaves_missing_documents_out(self, store: ChunkStore, tenant: str) -> None:
        store.ensure_tenant(tenant)
        for d in ("a", "b"):
            store.put_state(tenant, state(d, [cid(d)]))
        got = store.get_states(tenant, ["a", "b", "c", "a"])
        assert set(got) == {"a", "b"} and got["b"].chunk_ids == (cid("b"),)
        assert store.get_states(tenant, []) == {} and store.get_states(tenant, ["c"]) == {}

    def test_list_states_up_to_a_limit_or_all(self, store: ChunkStore, tenant: str) -> None:
        store.ensure_tenant(tenant)
        docs = [f"d{i}" for i in range(5)]
        for d in docs:
            store.put_state(tenant, state(d, [cid(d)]))
        assert sorted(s.document_id for s in store.list_states(tenant)) == docs
        assert sorted(s.document_id for s in store.list_states(tenant, limit=None)) == docs
        assert len(store.list_states(tenant, limit=2)) == 2

    # --- tenant isolation -----------------------------------------------------------------------------
    def test_nothing_of_one_tenant_is_visible_through_another(
        self, store: ChunkStore, tenant: str, other: str
    ) -> None:
        mine = [record("a", i, f"merger secret {i}") for i in range(2)]
        theirs = [r.model_copy(update={"text": f"merger other {r.position}"}) for r in mine]  # same ids
        self._write(store, tenant, mine)
        self._write(store, other, theirs)
        store.put_state(tenant, state("a", [r.chunk_id for r in mine]))
        assert store.get_state(other, "a") is None and store.list_states(other) == []
        for mode in MODES:
            hits = store.search(other, "merger secret", vec(1.0, 0.1), limit=10, acl=None, mode=mode)
            assert hits and all("other" in h.properties["text"] for h in hits), mode
        assert store.delete_chunks(other, [mine[0].chunk_id]) == 1
        assert store.count(tenant) == 2 and store.count(other) == 1
        assert store.get_chunks(tenant, [mine[0].chunk_id])[mine[0].chunk_id]["text"] == "merger secret 0"
        store.update_acl(other, [mine[1].chunk_id], ["mallory"], [])
        assert store.get_chunks(tenant, [mine[1].chunk_id])[mine[1].chunk_id]["acl_groups"] == ["staff"]
        assert [c["text"] for c in store.document_chunks(tenant, "a")] == [
            "merger secret 0",
            "merger secret 1",
        ]

    # --- search: access -------------------------------------------------------------------------------
    @pytest.mark.parametrize("mode", MODES)
    def test_a_forbidden_chunk_is_never_a_candidate(self, store: ChunkStore, tenant: str, mode: str) -> None:
        q = vec(1.0, 1.0)
        # Five board-only chunks that match the query better than the one staff chunk, by text and vector.
        board = [record(f"b{i}", 0, "merger merger plan merger", groups=("board",)) for i in range(5)]
        allowed = record("s", 0, "merger lunch menu for everyone", groups=("staff",))
        store.ensure_tenant(tenant)
        store.write_chunks(tenant, [*board, allowed], np.stack([q] * 5 + [vec(1.0, 0.2, 0.9)]))
        for limit in (1, 3, 10):
            hits = store.search(tenant, "merger plan", q, limit=limit, acl=STAFF, mode=mode)
            assert [h.chunk_id for h in hits] == [allowed.chunk_id], (mode, limit)
        everyone = store.search(tenant, "merger plan", q, limit=10, acl=None, mode=mode)
        assert len(everyone) == 6, "acl=None applies no access filter"

    @pytest.mark.parametrize("mode", MODES)
    def test_an_empty_access_filter_matches_nothing(self, store: ChunkStore, tenant: str, mode: str) -> None:
        empty_acl = record("e", 0, "merger open", groups=(), principals=())
        self._write(store, tenant, [record("a", 0, "merger plan"), empty_acl])
        assert store.search(tenant, "merger", vec(1.0), limit=10, acl=AccessFilter(), mode=mode) == []

    @pytest.mark.parametrize("mode", MODES)
    def test_principals_or_groups_admit(self, store: ChunkStore, tenant: str, mode: str) -> None:
        recs = [
            record("p", 0, "merger by principal", groups=(), principals=("alice",)),
            record("g", 0, "merger by group", groups=("eng",)),
            record("n", 0, "merger for nobody", groups=(), principals=()),
        ]
        self._write(store, tenant, recs)
        acl = AccessFilter(principals=("alice",), groups=("eng",))
        hits = store.search(tenant, "merger", vec(1.0), limit=10, acl=acl, mode=mode)
        assert {h.properties["document_id"] for h in hits} == {"p", "g"}
        only_alice = store.search(
            tenant, "merger", vec(1.0), limit=10, acl=AccessFilter(("alice",)), mode=mode
        )
        assert [h.properties["document_id"] for h in only_alice] == ["p"]

    # --- search: filters, modes, scores ---------------------------------------------------------------
    @pytest.mark.parametrize("field", sorted(FILTERABLE))
    def test_filters_are_exact_matches(self, store: ChunkStore, tenant: str, field: str) -> None:
        # Two chunks that differ only in `field`, the second value extending the first: exact, not prefix.
        values = {
            "document_id": ("doc-1", "doc-10"),
            "source_id": ("src", "src-2"),
            "owner": ("olivia", "Olivia"),
            "source_version": ("v1", "v1.1"),
            "policy_hash": ("p1", "p12"),
        }[field]
        recs = [_differing(field, value, i) for i, value in enumerate(values)]
        self._write(store, tenant, recs)
        for mode in MODES:
            hits = store.search(
                tenant, "common", vec(1.0), limit=10, acl=STAFF, filters={field: values[0]}, mode=mode
            )
            assert [h.chunk_id for h in hits] == [recs[0].chunk_id], (field, mode)

    def test_filters_combine_and_unknown_fields_are_refused(self, store: ChunkStore, tenant: str) -> None:
        recs = [record("a", 0, "common", owner="o1"), record("a", 1, "common", owner="o2"), record("b")]
        self._write(store, tenant, recs)
        hits = store.search(
            tenant,
            "common",
            None,
            limit=10,
            acl=STAFF,
            filters={"document_id": "a", "owner": "o2"},
            mode="bm25",
        )
        assert [h.chunk_id for h in hits] == [recs[1].chunk_id]
        for bad in ({"text": "common"}, {"acl_groups": "staff"}, {"document_id": "a", "tenant": "x"}):
            with pytest.raises(ValueError):
                store.search(tenant, "common", None, limit=10, acl=STAFF, filters=bad, mode="bm25")
        with pytest.raises(ValueError):  # the caller's mistake, even where there is nothing to search
            store.search("no-such-tenant", "x", None, limit=1, acl=STAFF, filters={"text": "x"}, mode="bm25")

    def test_bad_modes_are_refused(self, store: ChunkStore, tenant: str) -> None:
        self._write(store, tenant, [record("a")])
        with pytest.raises(ValueError):
            store.search(tenant, "a", vec(1.0), limit=1, acl=STAFF, mode="fuzzy")
        with pytest.raises(ValueError):
            store.search(tenant, "a", None, limit=1, acl=STAFF, mode="dense")

    @pytest.mark.parametrize("mode", MODES)
    def test_relevance_is_the_cosine_whenever_a_vector_is_given(
        self, store: ChunkStore, tenant: str, mode: str
    ) -> None:
        recs = [record(f"d{i}", 0, f"merger plan {'merger ' * i}") for i in range(4)]
        stored = np.stack([vec(3.0, 4.0), vec(1.0, 0.0, 2.0), vec(0.5, 0.5, 0.5), vec(-1.0, 2.0)])
        store.ensure_tenant(tenant)
        store.write_chunks(tenant, recs, stored)
        q = vec(2.0, 1.0)
        hits = store.search(tenant, "merger", q, limit=10, acl=STAFF, mode=mode)
        assert len(hits) == 4
        by_id = {r.chunk_id: v for r, v in zip(recs, stored, strict=True)}
        for h in hits:
            assert h.relevance == pytest.approx(cosine(by_id[h.chunk_id], q), abs=1e-5), mode
            assert h.vector is None, "vectors only when asked for"
            assert set(h.properties) == PROPERTIES
        with_vecs = store.search(tenant, "merger", q, limit=10, acl=STAFF, mode=mode, with_vectors=True)
        for h in with_vecs:
            assert h.vector is not None and np.allclose(h.vector, by_id[h.chunk_id], atol=1e-6)

    def test_bm25_without_a_vector_has_no_relevance(self, store: ChunkStore, tenant: str) -> None:
        self._write(store, tenant, [record("a", 0, "merger plan")])
        (hit,) = store.search(tenant, "merger", None, limit=5, acl=STAFF, mode="bm25")
        assert hit.relevance is None

    @pytest.mark.parametrize("mode", MODES)
    def test_scores_are_best_first_and_limited(self, store: ChunkStore, tenant: str, mode: str) -> None:
        recs = [record(f"d{i}", 0, "merger " * (i + 1) + "filler text here") for i in range(6)]
        store.ensure_tenant(tenant)
        store.write_chunks(tenant, recs, np.stack([vec(1.0, 0.3 * i) for i in range(6)]))
        hits = store.search(tenant, "merger", vec(1.0, 0.0), limit=4, acl=STAFF, mode=mode)
        assert len(hits) == 4
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True), (mode, scores)
        if mode == "dense":
            assert [h.properties["document_id"] for h in hits] == ["d0", "d1", "d2", "d3"]
            assert all(h.score == pytest.approx(h.relevance, abs=1e-5) for h in hits), "dense score = cosine"
        if mode == "bm25":
            assert hits[0].properties["document_id"] == "d5", "more occurrences score higher"

    def test_bm25_returns_only_chunks_sharing_a_term(self, store: ChunkStore, tenant: str) -> None:
        recs = [
            record("a", 0, "the cafeteria opens at eight"),
            record("b", 0, "parking is free on weekends"),
            record("c", 0, "", title="Cafeteria menu"),  # title and heading are searched too
            record("d", 0, "", heading="Cafeteria > Hours"),
        ]
        self._write(store, tenant, recs)
        hits = store.search(tenant, "Cafeteria!", None, limit=10, acl=STAFF, mode="bm25")
        assert {h.properties["document_id"] for h in hits} == {"a", "c", "d"}
        assert store.search(tenant, "the is at", None, limit=10, acl=STAFF, mode="bm25") == [], "stop words"
        assert store.search(tenant, "zeppelin", None, limit=10, acl=STAFF, mode="bm25") == []


@pytest.mark.unit
class TestMemoryChunkStore(ChunkStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[ChunkStore]:
        yield MemoryChunkStore()

    def test_non_uuid_chunk_ids_are_refused(self, store: ChunkStore, tenant: str) -> None:
        store.ensure_tenant(tenant)
        bad = record("a").model_copy(update={"chunk_id": "a:v1:0"})
        with pytest.raises(ValueError):
            store.write_chunks(tenant, [bad], vectors([bad]))
        assert store.count(tenant) == 0


@pytest.fixture(scope="class")
def weaviate_collections(settings: Settings) -> Iterator[tuple[Any, str, str]]:
    """A client and chunk/document collection names of one test class's own, dropped after it."""
    from ragstream.adapters.weaviate_client import connect

    client = connect(settings.weaviate)
    token = uuid.uuid4().hex[:10]
    names = (f"ContractChunks_{token}", f"ContractDocs_{token}")
    try:
        yield client, *names
    finally:
        client.collections.delete(list(names))
        client.close()


@pytest.mark.integration
class TestWeaviateChunkStore(ChunkStoreContract):
    """On the real local Weaviate (`ragstream stack up`), in collections of this class only."""

    @pytest.fixture
    def store(self, weaviate_collections: tuple[Any, str, str]) -> Iterator[ChunkStore]:
        from ragstream.adapters.store import WeaviateStore

        client, chunks, documents = weaviate_collections
        found = WeaviateStore(client, chunks, documents)
        found.ensure_schema()
        yield found
