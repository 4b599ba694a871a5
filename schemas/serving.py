"""Serving-plane events: a query is an event; every stage publishes a fact about it.

All serving topics are keyed by query id. The caller's identity travels as `Caller`, taken by the
gateway from a verified credential only (never from the request body).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.envelope import Event

RequestClass = Literal["interactive", "batch"]


class Caller(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    subject: str
    groups: tuple[str, ...] = ()
    auth_method: Literal["jwt", "api_key", "internal"] = "jwt"


class QuerySpec(BaseModel):
    """What the caller asked, as the gateway accepted it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    query_id: str
    question: str
    caller: Caller
    request_class: RequestClass = "interactive"
    top_k: int = 8
    filters: dict[str, str] = {}
    deadline_at: AwareDatetime
    # When the caller's request was accepted (end-to-end latency by request class is measured from it).
    requested_at: AwareDatetime | None = None
    generation: str | None = None
    mode: Literal["hybrid", "bm25", "dense"] = "hybrid"
    # Earlier user turns of a chat (oldest first), bounded by the gateway: query rewrite takes salient
    # terms from them for a follow-up question. Never shown to the model: the prompt has the question only.
    history: tuple[str, ...] = ()


class QueryRequested(Event):
    type: Literal["QueryRequested"] = "QueryRequested"
    query: QuerySpec


class Passage(BaseModel):
    """One retrieved chunk, with what authorization and citation need."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    chunk_id: str
    document_id: str
    text: str
    title: str = ""
    source_id: str = ""
    source_version: str = ""
    heading_path: tuple[str, ...] = ()
    acl_principals: tuple[str, ...] = ()
    acl_groups: tuple[str, ...] = ()
    generation: str = ""
    score: float = 0.0
    relevance: float | None = None  # cosine(question, chunk) from the embedding model; None for bm25-only
    retrieval_rank: int = 0


class QueryRetrieved(Event):
    type: Literal["QueryRetrieved"] = "QueryRetrieved"
    query: QuerySpec
    rewritten: str
    passages: tuple[Passage, ...]
    generation: str
    timings_ms: dict[str, float] = {}


class QueryReranked(Event):
    type: Literal["QueryReranked"] = "QueryReranked"
    query: QuerySpec
    passages: tuple[Passage, ...]
    generation: str
    reranker: str
    fallback_reason: str | None = None
    timings_ms: dict[str, float] = {}


class Citation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    citation_id: str
    document_id: str
    chunk_id: str
    source_id: str = ""
    source_version: str = ""
    title: str = ""


class AnswerDelta(Event):
    """A small batch of streamed tokens."""

    type: Literal["AnswerDelta"] = "AnswerDelta"
    query_id: str
    seq: int
    text: str


class QueryAnswered(Event):
    type: Literal["QueryAnswered"] = "QueryAnswered"
    query_id: str
    subject: str
    answer: str
    abstained: bool = False
    citations: tuple[Citation, ...] = ()
    generation: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings_ms: dict[str, float] = {}
    # Chunks that entered the prompt (ids only): evaluation checks citations and leaks against them.
    context_chunk_ids: tuple[str, ...] = ()
    # Share of the answer's statements its cited passages support (automatic scorer; None: abstained).
    groundedness: float | None = None
    # The question answered (the online verifier judges claims against it; "" from older producers).
    question: str = ""


# Why a query failed, from a closed set (metrics label, client-visible code); `reason` is internal text.
FailureCode = Literal[
    "deadline_exceeded",
    "bad_request",
    "model_unavailable",
    "model_rejected",
    "model_stream_incomplete",
    "store_unavailable",
    "internal",
]


class QueryFailed(Event):
    type: Literal["QueryFailed"] = "QueryFailed"
    query_id: str
    subject: str = ""
    stage: str
    reason: str
    code: FailureCode = "internal"


AnswerStream = Annotated[AnswerDelta | QueryAnswered | QueryFailed, Field(discriminator="type")]
