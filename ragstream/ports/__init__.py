"""Ports: the Protocols the planes depend on. Adapters implement them; the composition root injects them."""

from ragstream.ports.models import ChatModel, Embedder, ModelStreamIncompleteError, Reranker, Usage
from ragstream.ports.store import (
    FILTERABLE,
    AccessFilter,
    ChunkRecord,
    ChunkStore,
    DocumentState,
    SearchHit,
)
from ragstream.ports.verifier import ClaimVerdicts, Verifier

__all__ = [
    "FILTERABLE",
    "AccessFilter",
    "ChatModel",
    "ChunkRecord",
    "ChunkStore",
    "ClaimVerdicts",
    "DocumentState",
    "Embedder",
    "ModelStreamIncompleteError",
    "Reranker",
    "SearchHit",
    "Usage",
    "Verifier",
]
