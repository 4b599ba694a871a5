"""Embedders and chunking policies for a candidate generation, from CLI options or a record."""

from __future__ import annotations

from pathlib import Path

from ragstream.adapters.embedder import Embedder, HashEmbedder, SentenceTransformerEmbedder
from ragstream.core.chunk import ChunkingPolicy
from ragstream.generations.record import GenerationRecord
from ragstream.settings import Settings

HASH_MODEL = HashEmbedder.model_id


def embedder_for(
    settings: Settings,
    model: str | None = None,
    *,
    path: str | None = None,
    revision: str | None = None,
    dimensions: int = 64,
) -> Embedder:
    """The configured model when `model` is None or the same; `hash-bow` for the test embedder; else a local
    sentence-transformers model (`path`, or `model` when it is a directory: no hub is reached)."""
    cfg = settings.embedding
    if model == HASH_MODEL:
        return HashEmbedder(dimensions or 64)
    if model is None or (model == cfg.model_id and path is None):
        return SentenceTransformerEmbedder(cfg, settings.index.embedding_batch_size)
    local = path or (model if Path(model).is_dir() else None)
    if local is None:
        raise ValueError(f"embedding model {model!r}: give --embedding-path (no model hub is reachable)")
    changed = cfg.model_copy(
        update={"model_id": model, "local_path": local, "revision": revision or f"path:{local}"}
    )
    return SentenceTransformerEmbedder(changed, settings.index.embedding_batch_size)


def record_embedder(settings: Settings, record: GenerationRecord) -> Embedder:
    """The embedder a generation was built with (queries against it must use the same model)."""
    spec = record.spec
    if spec.embedding_model == HASH_MODEL:
        return HashEmbedder(spec.embedding_dimensions or 64)
    if (
        spec.embedding_model == settings.embedding.model_id
        and spec.embedding_revision == settings.embedding.revision
    ):
        return SentenceTransformerEmbedder(settings.embedding, settings.index.embedding_batch_size)
    local = spec.embedding_revision.removeprefix("path:")
    return embedder_for(settings, spec.embedding_model, path=local if Path(local).is_dir() else None)


def policy_from(
    settings: Settings,
    *,
    max_tokens: int | None = None,
    overlap_tokens: int | None = None,
    max_chunks_per_document: int | None = None,
    min_chunk_tokens: int | None = None,
) -> ChunkingPolicy:
    """The live policy with the given changes."""
    base = ChunkingPolicy(
        max_tokens=settings.ingest.chunk_max_tokens, overlap_tokens=settings.ingest.chunk_overlap_tokens
    )
    changes: dict[str, int] = {}
    if max_tokens is not None:
        changes["max_tokens"] = max_tokens
    if overlap_tokens is not None:
        changes["overlap_tokens"] = overlap_tokens
    if max_chunks_per_document is not None:
        changes["max_chunks_per_document"] = max_chunks_per_document
    if min_chunk_tokens is not None:
        changes["min_chunk_tokens"] = min_chunk_tokens
    return ChunkingPolicy.model_validate({**base.model_dump(), **changes})
