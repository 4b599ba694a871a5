"""The one registry: topic -> event model, consumer groups, dead-letter topics.

Topic names are versioned (`.v1`): an incompatible change gets a new topic, never a silent reshape.
Every topic has a dead-letter topic `<topic>.dlq`. Deployments, KEDA ScaledObjects and KafkaTopic
resources in `deploy/` are checked against this registry by a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from schemas.dlq import DeadLetter
from schemas.ingestion import ChunkedStream, IngestionReceipt, NormalizedStream, SourceChange
from schemas.serving import AnswerStream, QueryRequested, QueryReranked, QueryRetrieved
from schemas.verification import AnswerVerified


@dataclass(frozen=True)
class TopicSpec:
    name: str
    model: Any
    description: str
    partitions: int = 6
    compacted: bool = False
    retention_ms: int = 7 * 24 * 3600 * 1000
    key: str = "tenant_id/document_id"
    # Producer compression for this topic's records. Documents are large and compress well: zstd (gzip at
    # aiokafka's level 9 cost the ingestion path ~2 s of CPU per 1,300 chunks, taken from the encoder).
    # Query events are small and cross four topics on a latency budget: none (gzip cost ~1.5 ms a hop).
    compression: str | None = "zstd"
    adapter: TypeAdapter[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapter", TypeAdapter(self.model))

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"


SOURCE_CHANGES = TopicSpec(
    "ragstream.ingest.source-changes.v1",
    SourceChange,
    "DocumentChanged / AclChanged from upstream systems; compacted source of truth for rebuilds",
    compacted=True,
    retention_ms=-1,
)
DOCUMENTS_NORMALIZED = TopicSpec(
    "ragstream.ingest.documents-normalized.v1", NormalizedStream, "Clean text with structure"
)
DOCUMENTS_CHUNKED = TopicSpec(
    "ragstream.ingest.documents-chunked.v1", ChunkedStream, "Chunks under a versioned policy"
)
INGEST_RECEIPTS = TopicSpec(
    "ragstream.ingest.receipts.v1", IngestionReceipt, "DocumentIndexed / DocumentDeleted receipts"
)
QUERIES_REQUESTED = TopicSpec(
    "ragstream.query.requested.v1",
    QueryRequested,
    "Authenticated queries",
    key="query_id",
    retention_ms=24 * 3600 * 1000,
    compression=None,
)
QUERIES_RETRIEVED = TopicSpec(
    "ragstream.query.retrieved.v1",
    QueryRetrieved,
    "Authorized candidates",
    key="query_id",
    retention_ms=24 * 3600 * 1000,
    compression=None,
)
QUERIES_RERANKED = TopicSpec(
    "ragstream.query.reranked.v1",
    QueryReranked,
    "Reranked candidates",
    key="query_id",
    retention_ms=24 * 3600 * 1000,
    compression=None,
)
ANSWERS = TopicSpec(
    "ragstream.query.answers.v1",
    AnswerStream,
    "Token deltas, final answers, failures",
    key="query_id",
    retention_ms=24 * 3600 * 1000,
    compression=None,
)
ANSWERS_VERIFIED = TopicSpec(
    "ragstream.answers.verified.v1",
    AnswerVerified,
    "Model-verifier scores of a sampled share of answers",
    partitions=3,
    key="query_id",
    retention_ms=30 * 24 * 3600 * 1000,
)

TOPICS: dict[str, TopicSpec] = {
    t.name: t
    for t in (
        SOURCE_CHANGES,
        DOCUMENTS_NORMALIZED,
        DOCUMENTS_CHUNKED,
        INGEST_RECEIPTS,
        QUERIES_REQUESTED,
        QUERIES_RETRIEVED,
        QUERIES_RERANKED,
        ANSWERS,
        ANSWERS_VERIFIED,
    )
}
DLQ_MODEL = DeadLetter


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer = one module = one consumer group = one Deployment = one ScaledObject."""

    name: str
    group: str
    topic: str
    output: str | None
    module: str
    # Topics written besides `output` (retrieval answers a bad request with QueryFailed on the answers
    # topic). Declared here so the AsyncAPI document and the module's `Out:` header can be checked.
    also_writes: tuple[str, ...] = ()


CONSUMERS: dict[str, ConsumerSpec] = {
    c.name: c
    for c in (
        ConsumerSpec(
            "normalizer",
            "ragstream.normalizer",
            SOURCE_CHANGES.name,
            DOCUMENTS_NORMALIZED.name,
            "consumers.ingestion.normalizer",
        ),
        ConsumerSpec(
            "chunker",
            "ragstream.chunker",
            DOCUMENTS_NORMALIZED.name,
            DOCUMENTS_CHUNKED.name,
            "consumers.ingestion.chunker",
        ),
        ConsumerSpec(
            "embedder",
            "ragstream.embedder",
            DOCUMENTS_CHUNKED.name,
            INGEST_RECEIPTS.name,
            "consumers.ingestion.embedder",
        ),
        ConsumerSpec(
            "retrieval",
            "ragstream.retrieval",
            QUERIES_REQUESTED.name,
            QUERIES_RETRIEVED.name,
            "consumers.serving.retrieval",
            also_writes=(ANSWERS.name,),
        ),
        ConsumerSpec(
            "rerank",
            "ragstream.rerank",
            QUERIES_RETRIEVED.name,
            QUERIES_RERANKED.name,
            "consumers.serving.rerank",
        ),
        ConsumerSpec(
            "generation",
            "ragstream.generation",
            QUERIES_RERANKED.name,
            ANSWERS.name,
            "consumers.serving.generation",
        ),
        ConsumerSpec(
            "verifier",
            "ragstream.verifier",
            ANSWERS.name,
            ANSWERS_VERIFIED.name,
            "consumers.evaluation.verifier",
        ),
    )
}

# The two chains, in event order (the planes a local pipeline hosts).
INGESTION: tuple[str, ...] = ("normalizer", "chunker", "embedder")
SERVING: tuple[str, ...] = ("retrieval", "rerank", "generation")
# Off the answer path: the evaluation plane's online consumers (they read what serving wrote).
EVALUATION: tuple[str, ...] = ("verifier",)


def written_topics(consumer: ConsumerSpec) -> tuple[str, ...]:
    """Every topic a consumer produces to, its output first (dead-letter topics aside)."""
    return (*((consumer.output,) if consumer.output else ()), *consumer.also_writes)


def output_compression(consumer: ConsumerSpec) -> str | None:
    """Compression for a consumer's producer: that of the topic it writes (else the one it reads)."""
    return TOPICS[consumer.output or consumer.topic].compression


def dlq_topics() -> list[str]:
    return [t.dlq for t in TOPICS.values()]


def all_topic_names() -> list[str]:
    return [*TOPICS, *dlq_topics()]
