"""The consume -> handle -> produce -> commit loop every consumer runs.

- At-least-once: offsets are committed only after every output was acknowledged (acks=all, idempotent
  producer) and the handler's effect is durable.
- A record that cannot be decoded goes to `<topic>.dlq` with the reason and a bounded prefix of its bytes
  (length and sha256 of the whole), so the dead letter always fits a record; so does a record whose handler
  fails permanently (`PermanentError`, an adapter's 4xx), whose output would not fit a record
  (`output_too_large`), or whose unknown error persists after `max_attempts` tries on that record alone
  (`handler_error`). The partition keeps moving.
- `TransientError` (Weaviate or the model server unreachable, 429, 5xx) is retried with jittered
  exponential backoff within a per-record budget (`worker.retry_max_attempts`, `worker.retry_deadline_s`);
  then the record is dead-lettered (`retries_exhausted`) or, by setting, its partition is paused (kept
  retrying at the longest backoff, `ragstream_partition_paused` raised for an alert).
- Stop: the batch in hand is finished or abandoned uncommitted; `stop()` is bounded even with the broker
  gone (`worker.shutdown_timeout_s`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from pydantic import BaseModel

from ragstream.runtime import kafka, metrics
from ragstream.runtime.errors import (
    OutputTooLargeError,
    PermanentError,
    RetriesExhaustedError,
    TransientError,
)
from ragstream.runtime.kafka_admin import group_id
from ragstream.runtime.limits import Limits
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
    # The event serialized once (the worker checks its size before anything is sent).
    payload: bytes | None = field(default=None, compare=False, repr=False)

    def encoded(self) -> bytes:
        return self.payload if self.payload is not None else self.event.model_dump_json().encode()


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
                    item.encoded(),
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
        backoff_max_s: float | None = None,
        producer: Producer | None = None,
    ) -> None:
        self.spec = spec
        self.topic = TOPICS[spec.topic]
        self.handler = handler
        self.settings = settings
        self.group = group or group_id(settings.kafka, spec.name)
        self.max_batch = max_batch
        self.max_attempts = max_attempts  # for errors no adapter classified
        self.cfg = settings.worker
        self.backoff_max_s = backoff_max_s if backoff_max_s is not None else self.cfg.retry_backoff_max_s
        self.limits = Limits.of(settings)
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
        self.lag = 0
        self.last_progress = time.monotonic()
        self._started = False

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()
        self._started = True
        self.last_progress = time.monotonic()

    async def stop(self) -> None:
        """Close the clients, each within half of `worker.shutdown_timeout_s`: with the broker gone a
        clean leave-group or flush can wait for ever, and a pod past its grace period is SIGKILLed."""
        self._stopping.set()
        budget = self.cfg.shutdown_timeout_s / 2
        for what, close in (("consumer", self.consumer.stop), ("producer", self.producer.stop)):
            try:
                await asyncio.wait_for(close(), budget)
            except Exception as exc:  # TimeoutError included: abandon, nothing uncommitted is lost
                log.warning(
                    "%s: %s did not stop within %.0fs (%s); abandoned", self.spec.name, what, budget, exc
                )

    @property
    def ready(self) -> bool:
        return self._started and not self._stopping.is_set()

    @property
    def stuck(self) -> bool:
        """Lag and no progress for `worker.stuck_after_s` (liveness: the process should be restarted)."""
        return self.lag > 0 and time.monotonic() - self.last_progress > self.cfg.stuck_after_s

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
            except Exception as exc:  # a decoder bug must not jam the partition (rewound for ever)
                log.exception("%s: decoding offset %d raised", self.spec.name, rec.offset)
                dead.append(self._dead_letter(rec, "undecodable", exc, None))
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
        self.last_progress = time.monotonic()
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
            with contextlib.suppress(Exception):  # a broker that is gone must not hold the loop here
                lag += max(0, end - await asyncio.wait_for(self.consumer.position(tp), 2.0))
        metrics.CONSUMER_LAG.labels(self.group, self.spec.topic).set(lag)
        if lag == 0:
            self.last_progress = time.monotonic()  # idle is not stuck
        self.lag = lag
        metrics.CONSUMER_STUCK.labels(self.spec.name).set(int(self.stuck))

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
            return await self._with_retries(items, self.cfg.retry_max_attempts), []
        except Exception as exc:
            if self._stopping.is_set():
                raise  # shutting down (clients closing): redeliver later, never dead-letter for it
            log.warning("%s: batch of %d failed; isolating the failing records", self.spec.name, len(items))
            # The batch already spent a transient budget: each record gets one more try, not a new one
            # (an outage must not cost the budget once per record).
            if isinstance(exc, RetriesExhaustedError) or len(items) == 1:
                exhausted = isinstance(exc, RetriesExhaustedError)
                return await self._one_by_one(items, 1 if exhausted else self.cfg.retry_max_attempts)
        return await self._bisect(items)

    async def _bisect(self, items: list[Inbound]) -> tuple[list[Outbound], list[DeadLetter]]:
        """A batch that failed for a record's own reason: retry its halves, in order, down to the records
        that fail alone. One bad record then costs ~2·log2(batch) handler calls on large sub-batches,
        not one call per record of its batch (each paying the handler's per-call cost: the embedder's
        encode and store round trips; bench.fuzz found the embedder minutes behind)."""
        outputs: list[Outbound] = []
        dead: list[DeadLetter] = []
        mid = len(items) // 2
        for half in (items[:mid], items[mid:]):
            try:
                outputs.extend(await self._with_retries(half, self.cfg.retry_max_attempts))
                continue
            except Exception as exc:
                if self._stopping.is_set():
                    raise
                failure = exc
            if isinstance(failure, RetriesExhaustedError) or len(half) == 1:
                exhausted = isinstance(failure, RetriesExhaustedError)
                more = await self._one_by_one(half, 1 if exhausted else self.cfg.retry_max_attempts)
            else:
                more = await self._bisect(half)
            outputs.extend(more[0])
            dead.extend(more[1])
        return outputs, dead

    async def _one_by_one(
        self, items: list[Inbound], transient_attempts: int
    ) -> tuple[list[Outbound], list[DeadLetter]]:
        outputs: list[Outbound] = []
        dead: list[DeadLetter] = []
        for item in items:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    outputs.extend(await self._with_retries([item], transient_attempts))
                    break
                except PermanentError as exc:
                    metrics.HANDLER_ERRORS.labels(self.spec.name, "permanent").inc()
                    dead.append(self._dead_letter(item.record, exc.reason, exc, item.event))
                    break
                except Exception as exc:
                    if self._stopping.is_set():
                        raise
                    metrics.HANDLER_ERRORS.labels(self.spec.name, "unknown").inc()
                    if attempt == self.max_attempts:
                        dead.append(self._dead_letter(item.record, "handler_error", exc, item.event))
        return outputs, dead

    async def _with_retries(self, items: list[Inbound], max_attempts: int) -> list[Outbound]:
        """Retry TransientError with jittered exponential backoff until `max_attempts` or the deadline,
        then raise RetriesExhaustedError (or, with `on_retries_exhausted=pause`, keep retrying at the
        longest backoff with the partition reported paused). Everything else propagates."""
        started = time.monotonic()
        delay = 0.2
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    return self._sized(await self.handler(items))
                except TransientError as exc:
                    metrics.RETRIES.labels(self.spec.name).inc()
                    metrics.HANDLER_ERRORS.labels(self.spec.name, "transient").inc()
                    _span_event(items, "retry", attempt, exc)
                    if self._stopping.is_set():
                        raise
                    elapsed = time.monotonic() - started
                    if attempt >= max_attempts or elapsed + delay > self.cfg.retry_deadline_s:
                        if self.cfg.on_retries_exhausted == "dead_letter":
                            raise RetriesExhaustedError(attempt, elapsed, exc) from exc
                        metrics.PARTITION_PAUSED.labels(self.spec.name).set(1)
                        delay = self.backoff_max_s
                    log.warning("%s: transient failure, retrying in %.1fs: %s", self.spec.name, delay, exc)
                    # Full jitter in [delay/2, delay]: replicas retrying one outage do not stampede.
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, self.backoff_max_s)
        finally:
            metrics.PARTITION_PAUSED.labels(self.spec.name).set(0)

    def _sized(self, outputs: list[Outbound]) -> list[Outbound]:
        """Serialize each output once; one that cannot fit a record fails its input permanently."""
        out = []
        for o in outputs:
            payload = o.encoded()
            if not self.limits.fits(payload):
                raise OutputTooLargeError(o.topic, len(payload), self.limits.payload_bytes)
            out.append(replace(o, payload=payload))
        return out

    def _dead_letter(
        self, rec: ConsumerRecord[bytes, bytes], reason: str, exc: BaseException, event: Any
    ) -> DeadLetter:
        message = getattr(exc, "message", None) or str(exc)
        raw = rec.value or b""
        prefix = raw[: self.limits.dead_letter_prefix_bytes]
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
            original_key_b64=base64.b64encode(rec.key[:1024]).decode() if rec.key else None,
            original_headers=_bounded_headers(headers_dict(rec)),
            raw_b64=base64.b64encode(prefix).decode(),
            raw_length=len(raw),
            raw_sha256=hashlib.sha256(raw).hexdigest(),
            raw_truncated=len(prefix) < len(raw),
            tenant_id=_bounded_tenant(getattr(event, "tenant_id", None)),
            failed_at=utcnow(),
        )

    @staticmethod
    def _dl_key(d: DeadLetter) -> bytes:
        return base64.b64decode(d.original_key_b64) if d.original_key_b64 else d.dead_letter_id.encode()


def _bounded_headers(headers: dict[str, str], max_items: int = 32, max_chars: int = 1024) -> dict[str, str]:
    """Forged or huge headers must not make the dead letter too large to send."""
    return {k[:256]: v[:max_chars] for k, v in list(headers.items())[:max_items]}


def _bounded_tenant(tenant: object) -> str | None:
    return tenant[:256] if isinstance(tenant, str) else None


def _span_event(items: list[Inbound], name: str, attempt: int, exc: BaseException) -> None:
    for item in items:
        if item.span is not None:
            item.span.add_event(name, {"attempt": attempt, "error.type": type(exc).__name__})


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
