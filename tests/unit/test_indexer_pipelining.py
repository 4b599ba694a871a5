"""The embedder's batch application: encoding runs ahead of the writes, effects stay in event order."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

import numpy as np
import pytest

from ragstream.adapters.embedder import HashEmbedder
from ragstream.adapters.memory_store import MemoryChunkStore
from ragstream.indexing.indexer import Indexer, apply_batch, embed_text, encode_groups
from ragstream.ports import ChunkRecord
from schemas.ingestion import Acl, ChunkPayload, DocumentChunked, DocumentFacts, DocumentRemoved


class RecordingStore(MemoryChunkStore):
    """The in-memory store, logging each write and delete by document, in order; it can fail the write
    of one document the way a store that went away does."""

    def __init__(self, fail_on_write: str | None = None) -> None:
        super().__init__()
        self.log: list[tuple[str, str]] = []
        self.fail_on_write = fail_on_write

    def write_chunks(self, tenant: str, records: Sequence[ChunkRecord], vectors: np.ndarray) -> None:
        doc = records[0].document_id
        if doc == self.fail_on_write:
            raise ConnectionError("weaviate went away")
        self.log.append(("write", doc))
        super().write_chunks(tenant, records, vectors)

    def delete_chunks(self, tenant: str, chunk_ids: Sequence[str]) -> int:
        docs = {c["document_id"] for c in self.get_chunks(tenant, chunk_ids).values()}
        self.log.extend(("delete", d) for d in sorted(docs))
        return super().delete_chunks(tenant, chunk_ids)


def cid(doc: str, version: str, i: int) -> str:
    """A chunk id as the chunker makes them (a uuid5), readable back to its parts in a failure."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{doc}:{version}:{i}"))


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
                chunk_id=cid(doc, version, i), position=i, text=f"{doc} {version} chunk {i}", token_count=3
            )
            for i in range(n)
        ),
    )


def test_groups_reach_the_batch_size_in_order() -> None:
    docs = [_doc("a", 1), _doc("b", 2), _doc("c", 5), _doc("d", 1)]
    groups = encode_groups(docs, 3)
    assert [[d.facts.document_id for d in g] for g in groups] == [["a", "b"], ["c"], ["d"]]


def test_vectors_belong_to_their_documents_and_encoding_runs_off_the_writer_thread() -> None:
    store = RecordingStore()
    emb = CountingEmbedder()
    events = [_doc("a", 3), _doc("b", 2), _doc("c", 6)]
    receipts = apply_batch(Indexer(store, emb, "g1"), list(events))
    assert [r.document_id for r in receipts] == ["a", "b", "c"]
    assert [size for _, size in emb.calls] == [5, 6]  # a+b reach 4 chunks; c alone
    assert all(name.startswith("encode") for name, _ in emb.calls)
    reference = HashEmbedder(32)
    for ev in events:
        for c in ev.chunks:
            expected = reference.embed([embed_text("", c.text, c.heading_path)])[0]
            assert np.allclose(store.vector_of("t1", c.chunk_id), expected)


def test_effects_keep_event_order_across_a_delete_and_a_new_version() -> None:
    store = RecordingStore()
    events: list[object] = [
        _doc("a", 2),
        DocumentRemoved(tenant_id="t1", document_id="a"),
        _doc("a", 3, "v2"),
    ]
    apply_batch(Indexer(store, CountingEmbedder(), "g1"), events)
    assert store.log == [("write", "a"), ("delete", "a"), ("write", "a")]
    assert sorted(store.chunk_ids_of("t1", "a")) == sorted(cid("a", "v2", i) for i in range(3))
    state = store.get_state("t1", "a")
    assert state is not None and state.live_version == "v2"


def test_a_failed_write_propagates_and_stops_the_batch() -> None:
    store = RecordingStore(fail_on_write="b")
    emb = CountingEmbedder()
    events = [_doc("a", 4), _doc("b", 4), _doc("c", 4), _doc("d", 4)]
    with pytest.raises(ConnectionError):
        apply_batch(Indexer(store, emb, "g1"), list(events))
    assert store.log == [("write", "a")]
    assert store.get_state("t1", "c") is None and store.get_state("t1", "d") is None
