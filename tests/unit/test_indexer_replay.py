"""A replayed document change finishes what a crash interrupted (found by bench.chaos's reasoning: the
indexer writes new chunks, flips the state, then deletes the old ones; a SIGKILL between the flip and the
delete leaves a replay that sees an unchanged document)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest

from ragstream.adapters.embedder import HashEmbedder
from ragstream.adapters.memory_store import MemoryChunkStore
from ragstream.indexing.indexer import Indexer
from schemas.ingestion import Acl, ChunkPayload, DocumentChunked, DocumentFacts

pytestmark = pytest.mark.unit


class CrashingDelete(MemoryChunkStore):
    """Fails the next chunk delete, as a process killed right after the state flip would never run it."""

    def __init__(self) -> None:
        super().__init__()
        self.crash_next_delete = False

    def delete_chunks(self, tenant: str, chunk_ids: Sequence[str]) -> int:
        if self.crash_next_delete and chunk_ids:
            self.crash_next_delete = False
            raise ConnectionError("killed before the old chunks were deleted")
        return super().delete_chunks(tenant, chunk_ids)


def _doc(version: str, n: int) -> DocumentChunked:
    return DocumentChunked(
        tenant_id="t1",
        facts=DocumentFacts(
            document_id="d", source_version=version, acl=Acl(groups=("g",)), content_sha256=f"sha-{version}"
        ),
        normalizer_version="norm-1",
        policy_hash="p1",
        chunks=tuple(
            ChunkPayload(
                chunk_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"d/{version}/{i}")),
                position=i,
                text=f"version {version} chunk {i}",
                token_count=4,
            )
            for i in range(n)
        ),
    )


def test_a_replay_after_a_crash_between_flip_and_delete_removes_the_old_chunks() -> None:
    store = CrashingDelete()
    indexer = Indexer(store, HashEmbedder(16), "g1")
    v1, v2 = _doc("v1", 3), _doc("v2", 2)
    indexer.upsert(v1, None)
    store.crash_next_delete = True
    with pytest.raises(ConnectionError):
        indexer.upsert(v2, None)
    assert len(store.chunk_ids_of("t1", "d")) == 5  # the state names v2; v1's chunks are left over

    receipt = indexer.upsert(v2, None)  # the redelivery

    want = {c.chunk_id for c in v2.chunks}
    assert set(store.chunk_ids_of("t1", "d")) == want
    assert receipt.unchanged and receipt.chunks_deleted == 3 and set(receipt.chunk_ids) == want
