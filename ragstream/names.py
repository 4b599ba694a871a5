"""Collection and alias names of the index (one place, so every writer and reader agrees).

An index generation `g` lives in two Weaviate collections, `<chunks_collection_prefix>_<g>` (chunks) and
`<documents_collection>_<g>` (per-document state); readers follow the live alias,
`<chunks_collection_prefix>`, which points at the live generation's chunks collection. Omitting the
generation means the configured one (`index.generation`: where the live pipeline writes and static
serving reads). Pure string functions of `IndexSettings`, at the top of the runtime so that the adapters
(the store) and generation management both use them without adapters depending on generation logic.
"""

from __future__ import annotations

from ragstream.settings import IndexSettings, KafkaSettings
from schemas.review import REVIEW_DECISIONS, REVIEW_FLAGGED

# The human review queue's topics (schemas.review): generation writes flags, the gateway decisions.
REVIEW_TOPIC = REVIEW_FLAGGED.name
REVIEW_DECISIONS_TOPIC = REVIEW_DECISIONS.name


def chunks_collection(index: IndexSettings, generation: str | None = None) -> str:
    """The chunks collection of `generation` (default: the configured one)."""
    return f"{index.chunks_collection_prefix}_{generation or index.generation}"


def documents_collection(index: IndexSettings, generation: str | None = None) -> str:
    """The per-document state collection of `generation` (default: the configured one)."""
    return f"{index.documents_collection}_{generation or index.generation}"


def collections(index: IndexSettings, generation: str | None = None) -> tuple[str, str]:
    """(chunks, documents) of `generation`, in the order a store takes them."""
    return chunks_collection(index, generation), documents_collection(index, generation)


def live_alias(index: IndexSettings) -> str:
    """The alias readers follow: it points at the live generation's chunks collection."""
    return index.chunks_collection_prefix


def generation_of(index: IndexSettings, collection: str) -> str | None:
    """The generation a chunks collection belongs to (None if it is not one of this index's)."""
    prefix = f"{index.chunks_collection_prefix}_"
    return collection[len(prefix) :] if collection.startswith(prefix) else None


def review_topics(kafka: KafkaSettings) -> tuple[str, str]:
    """(flagged, decisions) under the deployment's topic prefix."""
    return kafka.topic_prefix + REVIEW_TOPIC, kafka.topic_prefix + REVIEW_DECISIONS_TOPIC
