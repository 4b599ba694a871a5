"""Where accepted queries go: `QueryRequested` on ragstream.query.requested.v1, keyed by query id."""

from __future__ import annotations

from typing import Protocol

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from ragstream.runtime.worker import Producer
from ragstream.settings import Settings
from schemas.serving import QueryRequested
from schemas.topics import QUERIES_REQUESTED

tracer = trace.get_tracer("ragstream.gateway")


class QueryPublisher(Protocol):
    """Publishes one accepted query (acknowledged by the broker when `publish` returns)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, event: QueryRequested) -> None: ...


class KafkaQueryPublisher:
    """The idempotent, acks=all runtime producer, carrying trace context in headers."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer(settings, QUERIES_REQUESTED.compression)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, event: QueryRequested) -> None:
        """The root span of the query's trace; the serving consumers continue it from the headers."""
        qid = event.query.query_id
        with tracer.start_as_current_span(
            "query.request", kind=SpanKind.PRODUCER, attributes={"ragstream.query_id": qid}
        ):
            await self._producer.send(QUERIES_REQUESTED.name, event, qid.encode())
