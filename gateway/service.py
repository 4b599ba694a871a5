"""What the HTTP handlers call: accept a query (limits, admission, publish), look one up, stream or await it.

Everything a request is refused for is refused here, before `publish`: nothing reaches Kafka for it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

from sse_starlette import ServerSentEvent

from gateway import metrics
from gateway.auth import Authenticator, Principal
from gateway.backpressure import Admission, LagProbe
from gateway.hub import AnswerHub, QueryRecord
from gateway.models import Answer, DeltaData, QueryAccepted, QueryError, QueryRequest, QueryStatus
from gateway.publisher import QueryPublisher
from ragstream.settings import Settings
from schemas.envelope import utcnow
from schemas.serving import AnswerDelta, QueryAnswered, QueryRequested, QuerySpec


class RejectedError(Exception):
    """A request refused with an HTTP status (and a metrics reason); rendered as `ErrorBody`."""

    def __init__(self, status: int, detail: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.reason = reason
        self.headers = headers or {}


def not_found() -> RejectedError:
    return RejectedError(404, "no such query", "not_found")


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
        self.admission = Admission(self.settings.serving, self.hub.inflight, self.lag_probe)

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

    async def submit(self, p: Principal, req: QueryRequest) -> tuple[QueryRecord, QueryAccepted]:
        """Limits and admission, then publish QueryRequested; the record to follow and the 202 body."""
        cfg = self.settings.serving
        if len(req.question) > cfg.max_question_chars:
            raise RejectedError(413, f"question longer than {cfg.max_question_chars} characters", "too_large")
        refused = self.admission.check(req.request_class)
        if refused is not None:
            raise RejectedError(
                429, refused.detail, refused.reason, {"Retry-After": str(refused.retry_after_s)}
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
        )
        qid = spec.query_id
        self.hub.register(qid, p, req.request_class, deadline_s)
        try:
            await self.publisher.publish(
                QueryRequested(tenant_id=p.tenant_id, query=spec, producer="gateway")
            )
        except Exception as exc:
            self.hub.forget(qid)
            raise RejectedError(503, f"query bus unavailable: {type(exc).__name__}", "unavailable") from exc
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
        return QueryStatus.failed(rec.final)

    async def answer(self, rec: QueryRecord) -> Answer:
        """Wait for the final answer; 504 past the deadline, 502 when a stage failed."""
        final = await self.hub.wait(rec)
        if isinstance(final, QueryAnswered):
            return Answer.of(final, rec.timings())
        status = 504 if "deadline" in final.reason else 502
        raise RejectedError(status, f"{final.stage}: {final.reason}", "failed")

    async def events(self, rec: QueryRecord, last_event_id: str | None) -> AsyncIterator[ServerSentEvent]:
        """SSE: `delta` events (id = seq), then one `answer` or `error` event (id = final)."""
        after = int(last_event_id) if last_event_id and last_event_id.lstrip("-").isdigit() else -1
        async for ev in self.hub.follow(rec, after):
            if isinstance(ev, AnswerDelta):
                data = DeltaData(seq=ev.seq, text=ev.text).model_dump_json()
                yield ServerSentEvent(data=data, event="delta", id=str(ev.seq))
            elif isinstance(ev, QueryAnswered):
                yield ServerSentEvent(
                    data=Answer.of(ev, rec.timings()).model_dump_json(), event="answer", id="final"
                )
            else:
                err = QueryError(stage=ev.stage, reason=ev.reason).model_dump_json()
                yield ServerSentEvent(data=err, event="error", id="final")
