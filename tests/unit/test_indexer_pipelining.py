"""The embedder's batch application: encoding runs ahead of the writes, effects stay in event order."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ragstream.adapters.embedder import HashEmbedder
from ragstream.indexing.indexer import Indexer, apply_batch, embed_text, encode_groups
from schemas.ingestion import Acl, ChunkPayload, DocumentChunked, DocumentFacts, DocumentRemoved
from tests.support.memory_store import MemoryStore


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
