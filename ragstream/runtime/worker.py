"""The consume -> handle -> produce -> commit loop every consumer runs.

- At-least-once: offsets are committed only after every output was acknowledged (acks=all, idempotent
  producer) and the handler's effect is durable.
- A record that cannot be decoded goes to `<topic>.dlq` with its raw bytes and the reason; so does a
  record whose handler fails permanently (`PermanentError`, or any error that persists after
  `max_attempts` tries on that record alone). The partition keeps moving.
- `TransientError` (e.g. Weaviate down) is retried with capped exponential backoff, forever: nothing is
  skipped or lost; the consumer stays in the group (heartbeats run in the background).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from pydantic import BaseModel

from ragstream.runtime import kafka, metrics
from ragstream.runtime.errors import PermanentError, TransientError
from ragstream.runtime.kafka_admin import group_id
from ragstream.settings import Settings
from ragstream.telemetry import STAGE_SPANS
from schemas.dlq import DeadLetter
from schemas.envelope import utcnow
from schemas.errors import EventDecodeError, decode
from schemas.topics import TOPICS, ConsumerSpec, output_compression

log = logging.getLogger(__name__)
tracer = trace.get_tracer("ragstream.worker")


@dataclass(frozen=True)
class Inbound:
    record: ConsumerRecord[bytes, bytes]
    event: Any
    # The record's own stage span as the current span: outputs created under it continue its trace.
    context: otel_context.Context
    span: Span | None = None


@dataclass(frozen=True)
class Outbound:
    topic: str
    key: bytes
    event: BaseModel
    headers: dict[str, str] = field(default_factory=dict)
    partition: int | None = None
    # Route by this key instead of `key` (an ACL record is compacted under its own key but must stay
    # ordered with its document's content records, so it shares their partition).
    partition_key: bytes | None = None
    # Trace context injected into the record's headers: by default the one current where the output was
    # created (a handler working inside `within(item.context)` needs nothing more).
    context: otel_context.Context = field(default_factory=otel_context.get_current)


Handler = Callable[[list[Inbound]], Awaitable[list[Outbound]]]


def headers_dict(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}


def event_key(event: Any) -> bytes:
    doc = getattr(event, "document_id", None) or getattr(getattr(event, "facts", None), "document_id", None)
    if doc is not None:
        return f"{event.tenant_id}/{doc}".encode()
    qid = getattr(event, "query_id", None) or getattr(getattr(event, "query", None), "query_id", None)
    return str(qid or event.event_id).encode()


class Producer:
    """Idempotent, acks=all producer that carries trace context in headers."""

    def __init__(self, settings: Settings, compression: str | None) -> None:
        self.prefix = settings.kafka.topic_prefix
        self._p = kafka.producer(
            settings.kafka,
            acks="all",
            enable_idempotence=True,
            max_request_size=settings.kafka.max_message_bytes,
            compression_type=compression,
            linger_ms=settings.kafka.linger_ms,
        )
        # Sent but not yet acknowledged (streamed deltas); every waiting send also waits for these.
        self._pending: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        await self._p.start()

    async def stop(self) -> None:
        await self._p.stop()

    async def send_many(self, items: Sequence[Outbound], *, wait: bool = True) -> None:
        """Send in order; with `wait`, return once these and all earlier sends are acknowledged (the
        worker commits only after that). `wait=False` only enqueues: a token stream does not pay a broker
        round trip per delta, and the final answer's acknowledgement still covers every delta before it."""
        futures = []
        for item in items:
            carrier: dict[str, str] = dict(item.headers)
            propagate.inject(carrier, context=item.context)
            carrier.setdefault("event-type", type(item.event).__name__)
            partition = item.partition
            if partition is None and item.partition_key is not None:
                parts = sorted(await self._p.partitions_for(self.prefix + item.topic))
                partition = parts[(murmur2(item.partition_key) & 0x7FFFFFFF) % len(parts)]
            futures.append(
                await self._p.send(
                    self.prefix + item.topic,
                    item.event.model_dump_json().encode(),
                    key=item.key,
                    partition=partition,
                    headers=[(k, v.encode()) for k, v in carrier.items()],
                )
            )
        if not wait:
            self._pending.extend(futures)
            return
        futures, self._pending = [*self._pending, *futures], []
        if futures:
            await asyncio.gather(*futures)

    async def send(self, topic: str, event: BaseModel, key: bytes | None = None) -> None:
        await self.send_many([Outbound(topic, key or event_key(event), event)])


class Worker:
    def __init__(
        self,
        spec: ConsumerSpec,
        handler: Handler,
        settings: Settings,
        *,
        group: str | None = None,
        max_batch: int = 32,
        max_attempts: int = 3,
        backoff_max_s: float = 10.0,
        producer: Producer | None = None,
    ) -> None:
        self.spec = spec
        self.topic = TOPICS[spec.topic]
        self.handler = handler
        self.settings = settings
        self.group = group or group_id(settings.kafka, spec.name)
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.backoff_max_s = backoff_max_s
        self.producer = producer or Producer(settings, output_compression(spec))
        self.consumer = kafka.consumer(
            settings.kafka,
            settings.kafka.topic_prefix + spec.topic,
            group_id=self.group,
            client_id=f"{settings.kafka.client_id}-{spec.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=600_000,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=settings.kafka.max_message_bytes,
        )
        self._stopping = asyncio.Event()
        self.processed = 0

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()

    async def stop(self) -> None:
        self._stopping.set()
        await self.consumer.stop()
        await self.producer.stop()

    async def run(self) -> None:
        """Poll until stopped. Each poll's records are handled, their outputs sent, then committed."""
        lag_at = 0.0
        while not self._stopping.is_set():
            if time.monotonic() - lag_at > 5.0:
                lag_at = time.monotonic()
                await self._report_lag()
            batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_batch)
            for tp, records in batches.items():
                if not records:
                    continue
                try:
                    await self._process(tp, records)
                except Exception:
                    if self._stopping.is_set():
                        return
                    # Nothing was committed: rewind so these records are fetched again, never skipped.
                    log.exception(
                        "%s: batch failed before commit; retrying from offset %d",
                        self.spec.name,
                        records[0].offset,
                    )
                    with contextlib.suppress(Exception):  # revoked in a rebalance: the next owner re-reads
                        self.consumer.seek(tp, records[0].offset)
                    await asyncio.sleep(1.0)

    async def _process(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        stage = self.spec.name
        started = time.perf_counter()
        good: list[Inbound] = []
        dead: list[DeadLetter] = []
        for rec in records:
            try:
                event = decode(self.topic, rec.value or b"")
            except EventDecodeError as exc:
                dead.append(self._dead_letter(rec, exc.reason, exc, None))
                continue
            good.append(self._inbound(rec, event))
        try:
            outputs, more_dead = await self._handle(good)
            dead.extend(more_dead)
            await self.producer.send_many(
                [*outputs, *(Outbound(self.topic.dlq, self._dl_key(d), d) for d in dead)]
            )
            await self.consumer.commit({tp: records[-1].offset + 1})
        except BaseException as exc:
            _end_spans(good, exc)
            raise
        _end_spans(good, None, {d.original_offset: d.reason for d in more_dead})
        self.processed += len(records)
        metrics.BATCH.labels(stage).observe(len(records))
        metrics.DURATION.labels(stage).observe(time.perf_counter() - started)
        metrics.EVENTS.labels(stage, "ok").inc(len(good) - len(more_dead))
        for d in dead:
            metrics.DEAD_LETTERS.labels(stage, d.reason).inc()
            metrics.EVENTS.labels(stage, "dead_letter").inc()

    async def _report_lag(self) -> None:
        """Lag of the partitions this process owns (KEDA computes its own from the broker; this is for
        dashboards and alerts)."""
        lag = 0
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is None:
                continue
            with contextlib.suppress(Exception):
                lag += max(0, end - await self.consumer.position(tp))
        metrics.CONSUMER_LAG.labels(self.group, self.spec.topic).set(lag)

    def _inbound(self, rec: ConsumerRecord[bytes, bytes], event: Any) -> Inbound:
        """Open the record's stage span as a child of the upstream span carried in its headers."""
        parent = propagate.extract(headers_dict(rec))
        span = tracer.start_span(
            STAGE_SPANS.get(self.spec.name, self.spec.name),
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": rec.topic,
                "messaging.consumer.group.name": self.group,
                "messaging.destination.partition.id": str(rec.partition),
                "messaging.kafka.offset": rec.offset,
                "ragstream.tenant_id": getattr(event, "tenant_id", ""),
                "ragstream.event_type": type(event).__name__,
            },
        )
        return Inbound(rec, event, trace.set_span_in_context(span, parent), span)

    def request_stop(self) -> None:
        """Finish the batch in hand, then leave the loop (nothing half-done is committed)."""
        self._stopping.set()

    async def _handle(self, items: list[Inbound]) -> tuple[list[Outbound], list[DeadLetter]]:
        if not items:
            return [], []
        try:
            return await self._with_retries(items), []
        except Exception:
            if self._stopping.is_set():
                raise  # shutting down (clients closing): redeliver later, never dead-letter for it
            log.warning("%s: batch of %d failed; handling records one by one", self.spec.name, len(items))
        return await self._one_by_one(items)

    async def _one_by_one(self, items: list[Inbound]) -> tuple[list[Outbound], list[DeadLetter]]:
        outputs: list[Outbound] = []
        dead: list[DeadLetter] = []
        for item in items:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    outputs.extend(await self._with_retries([item]))
                    break
                except PermanentError as exc:
                    dead.append(self._dead_letter(item.record, exc.reason, exc, item.event))
                    break
                except Exception as exc:
                    if self._stopping.is_set():
                        raise
                    if attempt == self.max_attempts:
                        dead.append(self._dead_letter(item.record, "handler_error", exc, item.event))
        return outputs, dead

    async def _with_retries(self, items: list[Inbound]) -> list[Outbound]:
        """Retry TransientError forever with capped backoff; everything else propagates."""
        delay = 0.2
        while True:
            try:
                return await self.handler(items)
            except TransientError as exc:
                metrics.RETRIES.labels(self.spec.name).inc()
                log.warning("%s: transient failure, retrying in %.1fs: %s", self.spec.name, delay, exc)
                if self._stopping.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)

    def _dead_letter(
        self, rec: ConsumerRecord[bytes, bytes], reason: str, exc: BaseException, event: Any
    ) -> DeadLetter:
        message = getattr(exc, "message", None) or str(exc)
        return DeadLetter(
            dead_letter_id=str(uuid.uuid4()),
            stage=self.spec.name,
            consumer_group=self.group,
            reason=reason,
            error_class=type(exc).__name__,
            message=message[:4000],
            original_topic=rec.topic,
            original_partition=rec.partition,
            original_offset=rec.offset,
            original_key_b64=base64.b64encode(rec.key).decode() if rec.key else None,
            original_headers=headers_dict(rec),
            raw_b64=base64.b64encode(rec.value or b"").decode(),
            tenant_id=getattr(event, "tenant_id", None),
            failed_at=utcnow(),
        )

    @staticmethod
    def _dl_key(d: DeadLetter) -> bytes:
        return base64.b64decode(d.original_key_b64) if d.original_key_b64 else d.dead_letter_id.encode()


def _end_spans(items: list[Inbound], exc: BaseException | None, dead: dict[int, str] | None = None) -> None:
    for item in items:
        if item.span is None:
            continue
        if exc is not None:
            item.span.record_exception(exc)
            item.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        elif dead and item.record.offset in dead:
            item.span.set_attribute("ragstream.dead_letter_reason", dead[item.record.offset])
            item.span.set_status(Status(StatusCode.ERROR, dead[item.record.offset]))
        item.span.end()
