"""The human review queue as the gateway sees it: flagged answers folded with reviewers' decisions.

`KafkaReviewQueue` follows the review topics (schemas.review) from their beginning by assignment (no
consumer group: every gateway replica holds the whole queue, bounded by `console.review_max_pending`) and
publishes decisions; `MemoryReviewQueue` is the same fold for tests. A decision is applied locally at
once, and again (idempotently) when it comes back from the topic, so every replica converges.

Metrics: flagged answers seen, decisions by verdict, and the review rate (decided / flagged) as a gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import Counter, Gauge
from pydantic import BaseModel

from ragstream.names import review_topics
from ragstream.runtime import kafka
from ragstream.runtime.kafka_admin import desired_topics, ensure_topics, partitions_of
from ragstream.settings import Settings
from schemas.review import AnswerFlagged, ReviewDecided, Verdict, review_topic_specs

log = logging.getLogger(__name__)
FLAGGED_SEEN = Counter("ragstream_review_flagged", "Flagged answers the review queue received")
DECISIONS = Counter("ragstream_review_decisions", "Review decisions made by reviewers", ["verdict"])
for _v in ("right", "wrong"):
    DECISIONS.labels(_v)
PENDING = Gauge("ragstream_review_pending", "Flagged answers awaiting a reviewer")
RATE = Gauge("ragstream_review_rate", "Share of flagged answers a reviewer has decided")

Key = tuple[str, str]  # (tenant, query id)


class ReviewQueue(Protocol):
    ready: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def pending(self, tenant: str) -> list[AnswerFlagged]:
        """The tenant's undecided flagged answers, newest first."""
        ...

    def get(self, tenant: str, query_id: str) -> AnswerFlagged | None: ...

    def decision(self, tenant: str, query_id: str) -> ReviewDecided | None: ...

    async def decide(self, decision: ReviewDecided) -> None:
        """Record a verdict (published; applied here at once)."""
        ...


class ReviewFold:
    """The queue's state: flagged answers by (tenant, query id) and the decisions made on them."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.flagged: OrderedDict[Key, AnswerFlagged] = OrderedDict()
        self.decided: dict[Key, ReviewDecided] = {}
        self.ready = False

    def apply(self, ev: BaseModel) -> None:
        if isinstance(ev, AnswerFlagged):
            key = (ev.tenant_id, ev.query_id)
            if key not in self.flagged:
                FLAGGED_SEEN.inc()
            self.flagged[key] = ev
            self.flagged.move_to_end(key)
            while len(self.flagged) > self.max_pending:
                old, _ = self.flagged.popitem(last=False)
                self.decided.pop(old, None)
        elif isinstance(ev, ReviewDecided):
            self.decided.setdefault((ev.tenant_id, ev.query_id), ev)  # the first verdict stands
        self._gauges()

    def _gauges(self) -> None:
        total = len(self.flagged)
        done = sum(1 for k in self.flagged if k in self.decided)
        PENDING.set(total - done)
        RATE.set(done / total if total else 0.0)

    def pending(self, tenant: str) -> list[AnswerFlagged]:
        rows = [f for k, f in self.flagged.items() if k[0] == tenant and k not in self.decided]
        return rows[::-1]

    def get(self, tenant: str, query_id: str) -> AnswerFlagged | None:
        return self.flagged.get((tenant, query_id))

    def decision(self, tenant: str, query_id: str) -> ReviewDecided | None:
        return self.decided.get((tenant, query_id))

    def record(self, decision: ReviewDecided, verdict: Verdict) -> None:
        DECISIONS.labels(verdict).inc()
        self.apply(decision)


class MemoryReviewQueue(ReviewFold):
    """In-process queue (tests, a gateway without Kafka): `add` plays the generation's part."""

    def __init__(self, max_pending: int = 2000) -> None:
        super().__init__(max_pending)
        self.published: list[ReviewDecided] = []

    async def start(self) -> None:
        self.ready = True

    async def stop(self) -> None:
        self.ready = False

    def add(self, ev: AnswerFlagged) -> None:
        self.apply(ev)

    async def decide(self, decision: ReviewDecided) -> None:
        self.published.append(decision)
        self.record(decision, decision.verdict)


class KafkaReviewQueue(ReviewFold):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.console.review_max_pending)
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Follow the topics in the background (created if missing): the gateway does not wait for, or
        fail on, the review queue; until it is ready the console's review page answers 503."""
        self._task = asyncio.create_task(self._run(), name="review-queue")

    async def _connect(self) -> None:
        k = self.settings.kafka
        await ensure_topics(k, desired_topics(k, review_topic_specs()))
        self._consumer = kafka.consumer(
            k, client_id=f"{k.client_id}-gateway-review", enable_auto_commit=False
        )
        await self._consumer.start()
        tps = [tp for t in review_topics(k) for tp in await partitions_of(self._consumer, t)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._producer = kafka.producer(k, client_id=f"{k.client_id}-gateway-review", acks="all")
        await self._producer.start()

    async def _run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._connect()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "review queue unavailable (retry in %.0f s): %s: %s", delay, type(exc).__name__, exc
                )
                await self._close_clients()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self.ready = True
        await self._pump()

    async def _close_clients(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._consumer = self._producer = None

    async def stop(self) -> None:
        self.ready = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_clients()

    async def _pump(self) -> None:
        assert self._consumer is not None
        flagged_topic, _ = review_topics(self.settings.kafka)
        flagged_spec, decided_spec = review_topic_specs()
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("review queue: fetch failed; retrying")
                await asyncio.sleep(1.0)
                continue
            for tp, records in batch.items():
                spec = flagged_spec if tp.topic == flagged_topic else decided_spec
                for r in records:
                    try:
                        self.apply(spec.adapter.validate_json(r.value or b""))
                    except ValueError as exc:
                        log.warning("review queue: skipping undecodable record at %s: %s", r.offset, exc)

    async def decide(self, decision: ReviewDecided) -> None:
        if self._producer is None:
            raise RuntimeError("review queue not started")
        _, topic = review_topics(self.settings.kafka)
        await self._producer.send_and_wait(
            topic, decision.model_dump_json().encode(), key=decision.query_id.encode()
        )
        self.record(decision, decision.verdict)
