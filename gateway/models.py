"""The HTTP API's bodies: what callers send and what they get back (these shape the OpenAPI document).

Identity is never part of a body: tenant, subject and groups come from the credential (see `auth`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.serving import Citation, QueryAnswered, QueryFailed, RequestClass

QueryState = Literal["pending", "answered", "failed"]
ErrorCode = Literal[
    "unauthorized",
    "not_found",
    "bad_request",
    "too_large",
    "tenant_inflight",
    "tenant_lag",
    "inflight",
    "lag",
    "unavailable",
    "deadline_exceeded",
    "query_failed",
    "model_not_found",
    "forbidden",
    "conflict",
    "internal",
]
# One fixed human message per code: nothing a client reads is built from an exception or a worker's text.
MESSAGES: dict[str, str] = {
    "unauthorized": "missing, invalid or expired credential",
    "not_found": "no such query",
    "bad_request": "malformed request",
    "too_large": "request over the size limit",
    "tenant_inflight": "too many queries of this tenant in flight; retry after Retry-After seconds",
    "tenant_lag": "the serving plane is busy and this tenant holds more than its share; retry later",
    "inflight": "the gateway is at capacity; retry after Retry-After seconds",
    "lag": "the serving plane is backlogged; retry after Retry-After seconds",
    "unavailable": "the query bus is unavailable; retry later",
    "deadline_exceeded": "no answer before the query's deadline",
    "query_failed": "the query could not be answered",
    "model_not_found": "no such model; GET /v1/models lists what this credential may ask",
    "forbidden": "the credential lacks the group this action needs",
    "conflict": "the request conflicts with the current state",
    "internal": "internal error",
}


class QueryRequest(BaseModel):
    """A question. Unknown fields (e.g. `tenant`, `user`) are refused with 422."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"question": "How are tenants isolated?", "request_class": "interactive"}]
        },
    )
    question: str = Field(
        min_length=1,
        description="The question; longer than `serving.max_question_chars` (default 2000) -> 413.",
    )
    request_class: RequestClass = Field(
        "interactive",
        description="`interactive` (short deadline, small top-k) or `batch` (long deadline, larger top-k).",
    )
    top_k: int | None = Field(
        None, ge=1, description="Passages to retrieve; default per request class, capped at the server max."
    )
    filters: dict[str, str] = Field(
        default_factory=dict,
        description="Exact-match filters on chunk fields: document_id, source_id, owner, source_version.",
    )
    mode: Literal["hybrid", "bm25", "dense"] = "hybrid"

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question is blank")
        return v


class QueryAccepted(BaseModel):
    """202 body: the query is on its way; follow it with the status or stream URL."""

    query_id: str
    status: QueryState = "pending"
    request_class: RequestClass
    top_k: int
    deadline_at: datetime
    status_url: str
    stream_url: str


class ErrorInfo(BaseModel):
    """An error as a client sees it: a code, its fixed message, and the correlation id to quote to
    operators (logs and traces carry the internal details under that id)."""

    code: ErrorCode
    message: str
    correlation_id: str

    @classmethod
    def of(cls, code: str, correlation_id: str, message: str | None = None) -> ErrorInfo:
        return cls(code=code, message=message or MESSAGES[code], correlation_id=correlation_id)  # type: ignore[arg-type]


class QueryError(ErrorInfo):
    """Why a query failed (`deadline_exceeded` or `query_failed`); the stage's own text stays in logs."""

    @classmethod
    def failed(cls, ev: QueryFailed, correlation_id: str = "") -> QueryError:
        """The client's view of `ev`: the query's correlation id (the event's when none is given)."""
        code = "deadline_exceeded" if "deadline" in ev.reason else "query_failed"
        return cls(code=code, message=MESSAGES[code], correlation_id=correlation_id or ev.correlation_id)


class Answer(BaseModel):
    """A final answer; `citations` name only chunks that were in the prompt."""

    query_id: str
    answer: str
    abstained: bool
    citations: list[Citation]
    generation: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings_ms: dict[str, float] = Field(
        default_factory=dict, description="Per-stage times from the workers, plus the gateway's own."
    )

    @classmethod
    def of(cls, ev: QueryAnswered, gateway_timings: dict[str, float] | None = None) -> Answer:
        """The API view of a QueryAnswered event."""
        return cls(
            query_id=ev.query_id,
            answer=ev.answer,
            abstained=ev.abstained,
            citations=list(ev.citations),
            generation=ev.generation,
            model=ev.model,
            prompt_tokens=ev.prompt_tokens,
            completion_tokens=ev.completion_tokens,
            timings_ms={**ev.timings_ms, **(gateway_timings or {})},
        )


class QueryStatus(BaseModel):
    """GET /v1/queries/{id}: the state, the text streamed so far, then the answer or the error."""

    query_id: str
    status: QueryState
    partial: str = Field("", description="Text streamed so far (while pending).")
    answer: Answer | None = None
    error: QueryError | None = None

    @classmethod
    def failed(cls, ev: QueryFailed) -> QueryStatus:
        return cls(query_id=ev.query_id, status="failed", error=QueryError.failed(ev))


class DeltaData(BaseModel):
    """SSE `delta` event data: a small batch of tokens, in order (`seq`)."""

    seq: int
    text: str


class ErrorBody(BaseModel):
    """Every non-422 error: `error` (code, fixed message, correlation id); `detail` repeats the message
    for older clients. The correlation id is also the `X-Correlation-ID` response header."""

    error: ErrorInfo
    detail: str

    @classmethod
    def of(cls, info: ErrorInfo) -> ErrorBody:
        return cls(error=info, detail=info.message)


class Health(BaseModel):
    status: Literal["ok", "starting"]
    checks: dict[str, bool] = Field(default_factory=dict)
