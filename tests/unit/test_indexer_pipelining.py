"""The embedder's batch application: encoding runs ahead of the writes, effects stay in event order."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from consumers.ingestion.embedder import Indexer, apply_batch, embed_text, encode_groups
from ragstream.adapters.embedder import HashEmbedder
from ragstream.adapters.store import ChunkRecord, DocumentState
from schemas.ingestion import Acl, ChunkPayload, DocumentChunked, DocumentFacts, DocumentRemoved


class MemoryStore:
    """The slice of WeaviateStore the Indexer uses, in memory, logging every effect in order."""

    chunks_name = "MemChunks"

    def __init__(self, fail_on_write: str | None = None) -> None:
        self.states: dict[tuple[str, str], DocumentState] = {}
        self.chunks: dict[tuple[str, str], tuple[ChunkRecord, np.ndarray]] = {}
        self.log: list[tuple[str, str]] = []
        self.fail_on_write = fail_on_write
        self.tenants: set[str] = set()

    def ensure_tenant(self, tenant: str) -> None:
        self.tenants.add(tenant)

    def has_tenant(self, tenant: str) -> bool:
        return tenant in self.tenants

    def get_state(self, tenant: str, document_id: str) -> DocumentState | None:
        return self.states.get((tenant, document_id))

    def put_state(self, tenant: str, state: DocumentState) -> None:
        self.states[(tenant, state.document_id)] = state

    def delete_state(self, tenant: str, document_id: str) -> None:
        self.states.pop((tenant, document_id), None)

    def write_chunks(self, tenant: str, records: Sequence[ChunkRecord], vectors: np.ndarray) -> None:
        doc = records[0].document_id
        if doc == self.fail_on_write:
            raise ConnectionError("weaviate went away")
        self.log.append(("write", doc))
        for r, v in zip(records, vectors, strict=True):
            self.chunks[(tenant, r.chunk_id)] = (r, v)

    def chunk_ids_of(self, tenant: str, document_id: str) -> list[str]:
        return [
            cid for (t, cid), (r, _) in self.chunks.items() if t == tenant and r.document_id == document_id
        ]

    def delete_chunks(self, tenant: str, chunk_ids: Sequence[str]) -> int:
        for cid in chunk_ids:
            self.chunks.pop((tenant, cid), None)
        if chunk_ids:
            self.log.append(("delete", chunk_ids[0].split(":")[0]))
        return len(chunk_ids)


class CountingEmbedder(HashEmbedder):
    """Records the thread and size of every encode call."""

    batch_size = 4

    def __init__(self) -> None:
        super().__init__(32)
        self.calls: list[tuple[str, int]] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append((threading.current_thread().name, len(texts)))
        return super().embed(texts)


def _doc(doc: str, n: int, version: str = "v1") -> DocumentChunked:
    return DocumentChunked(
        tenant_id="t1",
        facts=DocumentFacts(
            document_id=doc, source_version=version, acl=Acl(groups=("g",)), content_sha256=f"{doc}{version}"
        ),
        normalizer_version="norm-1",
        policy_hash="p1",
        chunks=tuple(
            ChunkPayload(
                chunk_id=f"{doc}:{version}:{i}", position=i, text=f"{doc} {version} chunk {i}", token_count=3
            )
            for i in range(n)
        ),
    )


def test_groups_reach_the_batch_size_in_order() -> None:
    docs = [_doc("a", 1), _doc("b", 2), _doc("c", 5), _doc("d", 1)]
    groups = encode_groups(docs, 3)
    assert [[d.facts.document_id for d in g] for g in groups] == [["a", "b"], ["c"], ["d"]]


def test_vectors_belong_to_their_documents_and_encoding_runs_off_the_writer_thread() -> None:
    store = MemoryStore()
    emb = CountingEmbedder()
    events = [_doc("a", 3), _doc("b", 2), _doc("c", 6)]
    receipts = apply_batch(Indexer(store, emb, "g1"), list(events))  # type: ignore[arg-type]
    assert [r.document_id for r in receipts] == ["a", "b", "c"]
    assert [size for _, size in emb.calls] == [5, 6]  # a+b reach 4 chunks; c alone
    assert all(name.startswith("encode") for name, _ in emb.calls)
    reference = HashEmbedder(32)
    for ev in events:
        for c in ev.chunks:
            expected = reference.embed([embed_text("", c.text, c.heading_path)])[0]
            assert np.allclose(store.chunks[("t1", c.chunk_id)][1], expected)


def test_effects_keep_event_order_across_a_delete_and_a_new_version() -> None:
    store = MemoryStore()
    events: list[object] = [
        _doc("a", 2),
        DocumentRemoved(tenant_id="t1", document_id="a"),
        _doc("a", 3, "v2"),
    ]
    apply_batch(Indexer(store, CountingEmbedder(), "g1"), events)  # type: ignore[arg-type]
    assert store.log == [("write", "a"), ("delete", "a"), ("write", "a")]
    assert sorted(store.chunk_ids_of("t1", "a")) == ["a:v2:0", "a:v2:1", "a:v2:2"]
    assert store.states[("t1", "a")].live_version == "v2"


def test_a_failed_write_propagates_and_stops_the_batch() -> None:
    store = MemoryStore(fail_on_write="b")
    emb = CountingEmbedder()
    events = [_doc("a", 4), _doc("b", 4), _doc("c", 4), _doc("d", 4)]
    with pytest.raises(ConnectionError):
        apply_batch(Indexer(store, emb, "g1"), list(events))  # type: ignore[arg-type]
    assert store.log == [("write", "a")]
    assert ("t1", "c") not in store.states and ("t1", "d") not in store.states
