"""The slice of WeaviateStore the embedder's Indexer uses, in memory, for unit tests of the Indexer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragstream.ports import ChunkRecord, DocumentState


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

    def update_acl(
        self, tenant: str, chunk_ids: Sequence[str], principals: Sequence[str], groups: Sequence[str]
    ) -> int:
        for cid in chunk_ids:
            r, v = self.chunks[(tenant, cid)]
            update = {"acl_principals": tuple(principals), "acl_groups": tuple(groups)}
            self.chunks[(tenant, cid)] = (r.model_copy(update=update), v)
        return len(chunk_ids)
