"""AnswerHub: fans the answers topic out to the requests waiting on it, by query id.

In:  ragstream.query.answers.v1 (AnswerDelta, QueryAnswered, QueryFailed) and ragstream.query.requested.v1
     (QueryRequested, for ownership only), read by ONE consumer per gateway process (no group: every
     replica sees every event, from the end of the topics at start-up).
Out: in-memory records that `follow` / `wait` hand to HTTP handlers.

A record is registered when this gateway accepts a query (owner = tenant + subject from the credential).
Queries accepted by another replica are learned from the requests topic (tenant and caller set by that
replica's verified credential), so a client may poll or stream from any replica; their finals are kept
too. The first final wins (a replayed generation may stream twice). Finished records are kept for `ttl_s`;
a pending record past its deadline is finished with a gateway `QueryFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer

from gateway import metrics
from gateway.auth import Principal
from ragstream.runtime import kafka
from ragstream.runtime.offsets import tail
from ragstream.settings import Settings
from schemas.envelope import utcnow
from schemas.errors import EventDecodeError, decode
from schemas.serving import AnswerDelta, QueryAnswered, QueryFailed, QueryRequested
from schemas.topics import ANSWERS, QUERIES_REQUESTED, TOPICS

log = logging.getLogger(__name__)
AnswerEvent = AnswerDelta | QueryAnswered | QueryFailed
Final = QueryAnswered | QueryFailed


@dataclass
class QueryRecord:
    """What the gateway knows about one query."""

    query_id: str
    tenant_id: str
    subject: str
    request_class: str = "interactive"
    deadline: float = float("inf")  # monotonic
    accepted_at: float = field(default_factory=time.monotonic)
    local: bool = True
    correlation_id: str = ""  # the QueryRequested's (every stage's events and logs carry it)
    deltas: list[AnswerDelta] = field(default_factory=list)
    final: Final | None = None
    first_delta_at: float | None = None
    finished_at: float | None = None
    failure_logged: bool = False  # the gateway logs a failed query's internal reason once
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def partial(self) -> str:
        return "".join(d.text for d in self.deltas)

    def owned_by(self, p: Principal) -> bool:
        return self.tenant_id == p.tenant_id and self.subject == p.subject

    def timings(self) -> dict[str, float]:
        """The gateway's view: accept -> first delta, accept -> final (ms)."""
        out: dict[str, float] = {}
        if self.first_delta_at is not None:
            out["gateway_first_delta"] = (self.first_delta_at - self.accepted_at) * 1000
        if self.finished_at is not None:
            out["gateway_total"] = (self.finished_at - self.accepted_at) * 1000
        return out

    def _notify(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        old.set()


class AnswerHub:
    """In-memory routing of answer events to waiting requests (the Kafka pump is `KafkaAnswerHub`)."""

    def __init__(self, ttl_s: float = 600.0) -> None:
        self.ttl_s = ttl_s
        self.records: dict[str, QueryRecord] = {}
        self._pending: dict[str, str] = {}  # accepted here, no final yet: query id -> tenant
        self._by_tenant: dict[str, int] = {}  # tenant -> its pending queries (tenants with none absent)
        self.ready = True

    async def start(self) -> None:
        """Nothing to connect in memory."""

    async def stop(self) -> None:
        """Nothing to close in memory."""

    def register(
        self,
        query_id: str,
        principal: Principal,
        request_class: str,
        deadline_s: float,
        correlation_id: str = "",
    ) -> None:
        """Expect answers for `query_id`, readable by `principal` only."""
        self._release(query_id)
        self.records[query_id] = QueryRecord(
            query_id,
            principal.tenant_id,
            principal.subject,
            request_class,
            deadline=time.monotonic() + deadline_s,
            correlation_id=correlation_id,
        )
        self._pending[query_id] = principal.tenant_id
        self._by_tenant[principal.tenant_id] = self._by_tenant.get(principal.tenant_id, 0) + 1

    def forget(self, query_id: str) -> None:
        self.records.pop(query_id, None)
        self._release(query_id)

    def _release(self, query_id: str) -> None:
        tenant = self._pending.pop(query_id, None)
        if tenant is None:
            return
        left = self._by_tenant[tenant] - 1
        if left:
            self._by_tenant[tenant] = left
        else:
            del self._by_tenant[tenant]

    def lookup(self, query_id: str, principal: Principal) -> QueryRecord | None:
        """The record when it exists and belongs to `principal`; None otherwise (the caller answers 404)."""
        rec = self.records.get(query_id)
        if rec is None or not rec.owned_by(principal):
            return None
        self._expire(rec, time.monotonic())
        return rec

    def inflight(self) -> int:
        """Queries accepted here that have no final yet."""
        return len(self._pending)

    def inflight_by_tenant(self) -> dict[str, int]:
        """Queries accepted here without a final, per tenant (read-only view; tenants with none absent)."""
        return self._by_tenant

    def dispatch(self, ev: AnswerEvent | QueryRequested) -> None:
        """Route one answers-topic event to its record (a QueryRequested from elsewhere opens one)."""
        now = time.monotonic()
        if isinstance(ev, QueryRequested):
            self._observe_request(ev, now)
            return
        rec = self.records.get(ev.query_id)
        if rec is None:
            if isinstance(ev, AnswerDelta) or not ev.subject:
                return  # not ours and nothing a caller could read
            rec = self.records[ev.query_id] = QueryRecord(
                ev.query_id, ev.tenant_id, ev.subject, local=False, correlation_id=ev.correlation_id
            )
        if rec.final is not None or ev.tenant_id != rec.tenant_id:
            return
        if isinstance(ev, AnswerDelta):
            if rec.deltas and ev.seq <= rec.deltas[-1].seq:
                return  # a replay of what was already streamed
            if rec.first_delta_at is None:
                rec.first_delta_at = now
                metrics.FIRST_DELTA.labels(rec.request_class).observe(now - rec.accepted_at)
            rec.deltas.append(ev)
        else:
            self._finish(rec, ev, now)
        rec._notify()

    def _observe_request(self, ev: QueryRequested, now: float) -> None:
        q = ev.query
        if q.query_id in self.records:
            return  # ours (registered before publishing) or already known
        remaining = (q.deadline_at - utcnow()).total_seconds()
        self.records[q.query_id] = QueryRecord(
            q.query_id,
            ev.tenant_id,
            q.caller.subject,
            q.request_class,
            deadline=now + remaining,
            local=False,
            correlation_id=ev.correlation_id,
        )

    def _finish(self, rec: QueryRecord, final: Final, now: float) -> None:
        rec.final = final
        rec.finished_at = now
        self._release(rec.query_id)
        if rec.local:
            outcome = "answered" if isinstance(final, QueryAnswered) else "failed"
            metrics.ANSWER_LATENCY.labels(rec.request_class, outcome).observe(now - rec.accepted_at)

    def _expire(self, rec: QueryRecord, now: float) -> None:
        if rec.final is None and now > rec.deadline:
            self._finish(
                rec,
                QueryFailed(
                    tenant_id=rec.tenant_id,
                    **({"correlation_id": rec.correlation_id} if rec.correlation_id else {}),
                    query_id=rec.query_id,
                    subject=rec.subject,
                    stage="gateway",
                    reason="deadline exceeded",
                    code="deadline_exceeded",
                    producer="gateway",
                ),
                now,
            )
            rec._notify()

    def sweep(self) -> None:
        """Finish pending records past their deadline; drop finished ones older than the TTL."""
        now = time.monotonic()
        for qid, rec in list(self.records.items()):
            self._expire(rec, now)
            if rec.finished_at is not None and now - rec.finished_at > self.ttl_s:
                del self.records[qid]

    async def follow(self, rec: QueryRecord, after_seq: int = -1) -> AsyncIterator[AnswerEvent]:
        """Deltas with seq > after_seq (buffered ones first), then the final; ends at the deadline."""
        sent = 0
        while True:
            changed = rec._changed
            while sent < len(rec.deltas):
                d = rec.deltas[sent]
                sent += 1
                if d.seq > after_seq:
                    yield d
            if rec.final is not None:
                yield rec.final
                return
            timeout = rec.deadline - time.monotonic()
            if timeout <= 0:
                self._expire(rec, time.monotonic())
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)

    async def wait(self, rec: QueryRecord) -> Final:
        """The final event (a gateway QueryFailed when the deadline passes first)."""
        async for ev in self.follow(rec):
            if not isinstance(ev, AnswerDelta):
                return ev
        raise AssertionError("follow() always ends with a final event")  # pragma: no cover


class KafkaAnswerHub(AnswerHub):
    """AnswerHub fed by one aiokafka consumer on the answers topic (all partitions, from the end)."""

    def __init__(self, settings: Settings, ttl_s: float = 600.0, sweep_s: float = 5.0) -> None:
        super().__init__(ttl_s)
        self.settings = settings
        self.sweep_s = sweep_s
        self.ready = False
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Assign every partition of the answers topic and position at its end before serving."""
        k = self.settings.kafka
        self._consumer = kafka.consumer(
            k,
            client_id=f"{k.client_id}-gateway-hub",
            enable_auto_commit=False,
            max_partition_fetch_bytes=k.max_message_bytes,
        )
        await self._consumer.start()
        topics = (k.topic_prefix + ANSWERS.name, k.topic_prefix + QUERIES_REQUESTED.name)
        await tail(self._consumer, topics, missing_ok=False)
        self._task = asyncio.create_task(self._pump(), name="answer-hub")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _pump(self) -> None:
        assert self._consumer is not None
        last_sweep = time.monotonic()
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=200)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("answer hub: fetch failed; retrying")
                self.ready = False
                await asyncio.sleep(1.0)
                continue
            self.ready = True
            prefix = self.settings.kafka.topic_prefix
            for tp, records in batch.items():
                spec = TOPICS[tp.topic.removeprefix(prefix)]
                for r in records:
                    try:
                        self.dispatch(decode(spec, r.value or b""))
                    except EventDecodeError as exc:
                        log.warning("answer hub: skipping undecodable record at %s: %s", r.offset, exc)
            if time.monotonic() - last_sweep > self.sweep_s:
                self.sweep()
                last_sweep = time.monotonic()
                metrics.INFLIGHT.set(self.inflight())
