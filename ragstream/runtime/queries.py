"""Queries as events, as the gateway sends them, and what the pipeline answers (eval runner, demo, tests)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from ragstream.runtime import kafka
from ragstream.runtime.offsets import tail
from ragstream.runtime.worker import Producer
from ragstream.settings import Settings
from schemas.envelope import utcnow
from schemas.errors import decode
from schemas.serving import Caller, QueryRequested, QuerySpec
from schemas.topics import ANSWERS, QUERIES_REQUESTED, QUERIES_RETRIEVED

tracer = trace.get_tracer("ragstream.queries")


class QueryClient:
    """Publishes QueryRequested; follows the answers and retrieved topics from the end."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.producer = Producer(settings, QUERIES_REQUESTED.compression)
        self.consumer = kafka.consumer(settings.kafka, enable_auto_commit=False)
        self.events: dict[str, list[Any]] = defaultdict(list)
        self._done: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> QueryClient:
        await self.producer.start()
        await self.consumer.start()
        prefix = self.s.kafka.topic_prefix
        await tail(self.consumer, (prefix + ANSWERS.name, prefix + QUERIES_RETRIEVED.name))
        self._task = asyncio.create_task(self._pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()
        await self.producer.stop()

    async def _pump(self) -> None:
        prefix = self.s.kafka.topic_prefix
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                topic = tp.topic.removeprefix(prefix)
                for r in records:
                    ev = decode(topic, r.value or b"")
                    qid = getattr(ev, "query_id", None) or ev.query.query_id
                    self.events[qid].append(ev)
                    if ev.type in ("QueryAnswered", "QueryFailed"):
                        self._done[qid].set()

    async def ask(
        self,
        tenant: str,
        subject: str,
        groups: tuple[str, ...],
        question: str,
        *,
        top_k: int = 8,
        timeout_s: float = 60.0,
        request_class: str = "interactive",
    ) -> dict[str, Any]:
        qid = str(uuid.uuid4())
        spec = QuerySpec(
            query_id=qid,
            question=question,
            caller=Caller(subject=subject, groups=groups),
            top_k=top_k,
            request_class=request_class,  # type: ignore[arg-type]
            deadline_at=utcnow() + timedelta(seconds=timeout_s),
            requested_at=utcnow(),
        )
        # The root of the query's trace; retrieval, rerank and generation continue it over Kafka.
        with tracer.start_as_current_span(
            "query.request", kind=SpanKind.PRODUCER, attributes={"ragstream.query_id": qid}
        ):
            await self.producer.send(
                QUERIES_REQUESTED.name, QueryRequested(tenant_id=tenant, query=spec), qid.encode()
            )
        await asyncio.wait_for(self._done[qid].wait(), timeout_s)
        evs = self.events.pop(qid)
        self._done.pop(qid, None)
        final = next(e for e in evs if e.type in ("QueryAnswered", "QueryFailed"))
        retrieved = next((e for e in evs if e.type == "QueryRetrieved"), None)
        return {"final": final, "retrieved": retrieved, "deltas": [e for e in evs if e.type == "AnswerDelta"]}
