"""Collection and alias names of an index generation (one place, so every reader agrees)."""

from __future__ import annotations

from ragstream.settings import IndexSettings


def chunks_collection(index: IndexSettings, generation: str) -> str:
    """The chunks collection of `generation`: `<chunks prefix>_<generation>`."""
    return f"{index.chunks_collection_prefix}_{generation}"


def documents_collection(index: IndexSettings, generation: str) -> str:
    """The per-document state collection of `generation`: `<documents>_<generation>`."""
    return f"{index.documents_collection}_{generation}"


def live_alias(index: IndexSettings) -> str:
    """The alias readers follow: it points at the live generation's chunks collection."""
    return index.chunks_collection_prefix


def generation_of(index: IndexSettings, collection: str) -> str | None:
    """The generation a chunks collection belongs to (None if it is not one of this index's)."""
    prefix = f"{index.chunks_collection_prefix}_"
    return collection[len(prefix) :] if collection.startswith(prefix) else None
