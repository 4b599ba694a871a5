"""What the HTTP handlers call: accept a query (limits, admission, publish), look one up, stream or await it.

Everything a request is refused for is refused here, before `publish`: nothing reaches Kafka for it.
What a client reads of an error is a code, its fixed message and a correlation id (`ErrorInfo`); exception
and worker texts go to the log under that correlation id, never into a response or an SSE event.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

from sse_starlette import ServerSentEvent

from gateway import metrics
from gateway.auth import Authenticator, Principal
from gateway.backpressure import Admission, LagProbe
from gateway.hub import AnswerHub, QueryRecord
from gateway.models import (
    MESSAGES,
    Answer,
    DeltaData,
    ErrorInfo,
    QueryAccepted,
    QueryError,
    QueryRequest,
    QueryStatus,
)
from gateway.publisher import QueryPublisher
from ragstream.settings import Settings
from schemas.envelope import utcnow
from schemas.serving import AnswerDelta, QueryAnswered, QueryFailed, QueryRequested, QuerySpec

log = logging.getLogger(__name__)
# SSE ids the gateway sends: a delta's seq (non-negative, bounded like a 64-bit int) or `final`.
_SEQ_ID = re.compile(r"[0-9]{1,18}")
AFTER_FINAL = 10**18  # Last-Event-ID `final`: every delta was seen, only the final is sent again


class RejectedError(Exception):
    """A request refused with an HTTP status; rendered as `ErrorBody` (code = `reason`, the metrics label).

    `message` is what the client reads (default: the code's fixed message, `models.MESSAGES`); `internal`
    is logged with the correlation id and never sent.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        headers: dict[str, str] | None = None,
        *,
        message: str | None = None,
        internal: str = "",
        correlation_id: str | None = None,
    ) -> None:
        if reason not in MESSAGES:
            raise ValueError(f"unknown error code {reason!r}")
        super().__init__(internal or reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}
        self.message = message or MESSAGES[reason]
        self.internal = internal
        self.correlation_id = correlation_id  # None: the request's own

    @property
    def detail(self) -> str:
        return self.message

    def info(self, correlation_id: str) -> ErrorInfo:
        return ErrorInfo.of(self.reason, self.correlation_id or correlation_id, self.message)


def not_found() -> RejectedError:
    return RejectedError(404, "not_found")


def parse_last_event_id(value: str | None) -> int:
    """The seq to resume after: -1 without the header; ASCII digits (at most 18) or `final`; else 400."""
    if value is None or value == "":
        return -1
    if value == "final":
        return AFTER_FINAL
    if _SEQ_ID.fullmatch(value) is None:
        raise RejectedError(
            400,
            "bad_request",
            message="Last-Event-ID must be an event id this stream sent (digits or `final`)",
            internal=f"bad Last-Event-ID ({len(value)} chars)",
        )
    return int(value)


@dataclass
class Gateway:
    """The gateway's collaborators, built once at start-up (`gateway.app.create_app`)."""

    settings: Settings
    publisher: QueryPublisher
    hub: AnswerHub
    lag_probe: LagProbe | None = None
    auth: Authenticator = field(init=False)
    admission: Admission = field(init=False)
    started: bool = False

    def __post_init__(self) -> None:
        self.auth = Authenticator(self.settings.auth)
        self.admission = Admission(
            self.settings.serving, self.hub.inflight, self.lag_probe, tenants=self.hub.inflight_by_tenant
        )

    async def start(self) -> None:
        await self.hub.start()
        await self.publisher.start()
        await self.admission.start()
        self.started = True

    async def stop(self) -> None:
        self.started = False
        await self.admission.stop()
        await self.publisher.stop()
        await self.hub.stop()

    def ready(self) -> dict[str, bool]:
        return {"started": self.started, "answer_hub": self.hub.ready}

    async def submit(
        self,
        p: Principal,
        req: QueryRequest,
        correlation_id: str | None = None,
        history: tuple[str, ...] = (),
    ) -> tuple[QueryRecord, QueryAccepted]:
        """Limits and admission, then publish QueryRequested; the record to follow and the 202 body.

        `correlation_id` (the HTTP request's) becomes the query's: every stage's events and logs carry it.
        `history`: earlier user turns for query rewrite, already bounded by the caller (the OpenAI API).
        """
        cfg = self.settings.serving
        if len(req.question) > cfg.max_question_chars:
            raise RejectedError(
                413, "too_large", message=f"question longer than {cfg.max_question_chars} characters"
            )
        refused = self.admission.check(req.request_class, p.tenant_id)
        if refused is not None:
            raise RejectedError(
                429, refused.reason, {"Retry-After": str(refused.retry_after_s)}, internal=refused.detail
            )
        batch = req.request_class == "batch"
        top_k = min(req.top_k or (cfg.batch_top_k if batch else cfg.interactive_top_k), cfg.max_top_k)
        deadline_s = cfg.batch_deadline_s if batch else cfg.interactive_deadline_s
        now = utcnow()
        spec = QuerySpec(
            query_id=str(uuid.uuid4()),
            question=req.question,
            caller=p.caller(),
            request_class=req.request_class,
            top_k=top_k,
            filters=req.filters,
            deadline_at=now + timedelta(seconds=deadline_s),
            requested_at=now,
            mode=req.mode,
            history=history,
        )
        qid = spec.query_id
        event = QueryRequested(
            tenant_id=p.tenant_id,
            query=spec,
            producer="gateway",
            **({"correlation_id": correlation_id} if correlation_id else {}),
        )
        self.hub.register(qid, p, req.request_class, deadline_s, event.correlation_id)
        try:
            await self.publisher.publish(event)
        except Exception as exc:
            self.hub.forget(qid)
            raise RejectedError(
                503, "unavailable", internal=f"publish failed: {type(exc).__name__}: {exc}"
            ) from exc
        metrics.ACCEPTED.labels(req.request_class).inc()
        accepted = QueryAccepted(
            query_id=qid,
            request_class=req.request_class,
            top_k=top_k,
            deadline_at=spec.deadline_at,
            status_url=f"/v1/queries/{qid}",
            stream_url=f"/v1/queries/{qid}/stream",
        )
        return self.hub.records[qid], accepted

    def record(self, p: Principal, query_id: str) -> QueryRecord:
        """The caller's own query, else 404 (unknown and not-yours look the same)."""
        rec = self.hub.lookup(query_id, p)
        if rec is None:
            raise not_found()
        return rec

    def status(self, rec: QueryRecord) -> QueryStatus:
        if rec.final is None:
            return QueryStatus(query_id=rec.query_id, status="pending", partial=rec.partial)
        if isinstance(rec.final, QueryAnswered):
            return QueryStatus(
                query_id=rec.query_id, status="answered", answer=Answer.of(rec.final, rec.timings())
            )
        return QueryStatus(query_id=rec.query_id, status="failed", error=self.failure(rec, rec.final))

    async def answer(self, rec: QueryRecord) -> Answer:
        """Wait for the final answer; 504 past the deadline, 502 when a stage failed."""
        final = await self.hub.wait(rec)
        if isinstance(final, QueryAnswered):
            return Answer.of(final, rec.timings())
        err = self.failure(rec, final)
        status = 504 if err.code == "deadline_exceeded" else 502
        raise RejectedError(status, err.code, correlation_id=err.correlation_id)

    def failure(self, rec: QueryRecord, final: QueryFailed) -> QueryError:
        """What the client reads of a failed query; the stage's reason is logged (once per record)."""
        err = QueryError.failed(final, rec.correlation_id)
        if not rec.failure_logged:
            rec.failure_logged = True
            log.warning(
                "query %s failed at %s (correlation %s, event %s): %s",
                rec.query_id,
                final.stage,
                err.correlation_id,
                final.event_id,
                final.reason,
            )
        return err

    async def events(self, rec: QueryRecord, after_seq: int = -1) -> AsyncIterator[ServerSentEvent]:
        """SSE: `delta` events (id = seq), then one `answer` or `error` event (id = final).

        `after_seq` comes from `parse_last_event_id` (validated before the stream starts).
        """
        try:
            async for ev in self.hub.follow(rec, after_seq):
                if isinstance(ev, AnswerDelta):
                    data = DeltaData(seq=ev.seq, text=ev.text).model_dump_json()
                    yield ServerSentEvent(data=data, event="delta", id=str(ev.seq))
                elif isinstance(ev, QueryAnswered):
                    yield ServerSentEvent(
                        data=Answer.of(ev, rec.timings()).model_dump_json(), event="answer", id="final"
                    )
                else:
                    err = self.failure(rec, ev).model_dump_json()
                    yield ServerSentEvent(data=err, event="error", id="final")
        except Exception:
            # The status line is already sent: end the stream with an error event, details in the log.
            log.exception("stream of query %s broke (correlation %s)", rec.query_id, rec.correlation_id)
            metrics.rejected("internal")
            err = ErrorInfo.of("internal", rec.correlation_id or rec.query_id).model_dump_json()
            yield ServerSentEvent(data=err, event="error", id="final")
