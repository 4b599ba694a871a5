"""Kafka in memory, for component tests of whole consumer chains (after FastStream's TestKafkaBroker).

A test registers the real handlers (`application.compose.wire` builds them over in-memory adapters) with
their `ConsumerSpec`s, publishes an event and awaits `drain()`: every output a handler returns is routed to
each handler whose spec consumes that output's topic, until nothing is left to deliver. What is the same as
on Kafka, so a test catches what production would:

- Every record goes over the wire format: the event is serialized with `model_dump_json` and the consumer
  decodes it with `schemas.errors.decode(TOPICS[topic], bytes)`; a schema mistake fails there.
- A record that does not decode, or whose handler raises `PermanentError`, becomes a `DeadLetter` on
  `<topic>.dlq`, built by the worker's own dead-letter code (`Worker._dead_letter`).
- Records of one partition (by `partition`, else murmur2 of the key, as the producer routes them) reach a
  handler in order, in batches of up to `max_batch`.
- Every record of every topic is kept (`records`, `events`, `dead_letters`), dead letters and answers
  included: a test reads any topic afterwards.

What is not: there is one process and no broker, so there are no offsets to commit, no retries and no
rebalances. Any other exception of a handler (a `TransientError` included) is raised out of `drain()`: in
a component test it is a bug to see, not a record to retry.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.partitioner import murmur2
from opentelemetry import context as otel_context
from pydantic import BaseModel

from ragstream.runtime.errors import PermanentError
from ragstream.runtime.kafka_admin import group_id
from ragstream.runtime.limits import Limits
from ragstream.runtime.worker import Handler, Inbound, Outbound, Worker, event_key
from ragstream.settings import Settings
from schemas.dlq import DeadLetter
from schemas.errors import EventDecodeError, decode
from schemas.topics import TOPICS, ConsumerSpec

Record = ConsumerRecord[bytes, bytes]
MAX_DELIVERIES = 100_000  # a chain that has not settled by then loops (a handler feeding itself)


class _DeadLetters:
    """What `Worker._dead_letter` reads of its worker (spec, group, limits), without any Kafka client:
    the bus builds dead letters with the worker's own code instead of a copy of it."""

    _dead_letter = Worker._dead_letter

    def __init__(self, spec: ConsumerSpec, settings: Settings) -> None:
        self.spec = spec
        self.group = group_id(settings.kafka, spec.name)
        self.limits = Limits.of(settings)

    def of(self, record: Record, reason: str, exc: BaseException, event: Any) -> DeadLetter:
        return self._dead_letter(record, reason, exc, event)


@dataclass
class _Subscriber:
    spec: ConsumerSpec
    handler: Handler
    dead_letters: _DeadLetters


class BusProducer:
    """The slice of `ragstream.runtime.worker.Producer` handlers and the composition root use
    (`send_many`, `send`, `start`, `stop`), publishing onto the bus. Sends are delivered at the next
    `drain()` round, after the handler that sent them returns, as records on Kafka would be."""

    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    async def start(self) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def send_many(self, items: Sequence[Outbound], *, wait: bool = True) -> None:
        """Publish in order; `wait` changes nothing (the bus acknowledges every record at once)."""
        for item in items:
            self._bus.emit(item)

    async def send(self, topic: str, event: BaseModel, key: bytes | None = None) -> None:
        self._bus.emit(Outbound(topic, key or event_key(event), event))


class MemoryBus:
    """Topics, subscribers and every record, in memory. See the module docstring for the contract."""

    def __init__(self, settings: Settings, max_batch: int = 32) -> None:
        self.settings = settings
        self.max_batch = max_batch
        self.records: dict[str, list[Record]] = defaultdict(list)
        self.producer = BusProducer(self)
        self._subscribers: dict[str, list[_Subscriber]] = defaultdict(list)
        self._pending: deque[tuple[_Subscriber, Record]] = deque()
        self._offsets: dict[tuple[str, int], int] = defaultdict(int)

    # --- wiring ---------------------------------------------------------------------------------------
    def register(self, spec: ConsumerSpec, handler: Handler) -> None:
        """Deliver every record published on `spec.topic` from now on to `handler` (one consumer group;
        several groups may consume one topic, each receives every record)."""
        if spec.topic not in TOPICS:
            raise ValueError(f"{spec.name} consumes {spec.topic!r}, which is not a registered topic")
        if any(s.spec.name == spec.name for s in self._subscribers[spec.topic]):
            raise ValueError(f"{spec.name} is already registered")
        self._subscribers[spec.topic].append(_Subscriber(spec, handler, _DeadLetters(spec, self.settings)))

    # --- publishing -----------------------------------------------------------------------------------
    async def publish(self, topic: str, event: BaseModel, key: bytes | None = None) -> None:
        """Publish one event as an upstream producer would (then `drain()` to run the chain)."""
        self.emit(Outbound(topic, key or event_key(event), event))

    def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Publish bytes as they are (a forged or corrupt record: the consumer has to refuse it)."""
        self._append(topic, key, value, [], None)

    def emit(self, item: Outbound) -> None:
        """Serialize one output as the producer does and append it to its topic's log."""
        headers = {**item.headers, "event-type": type(item.event).__name__}
        value = item.event.model_dump_json().encode()
        partition = item.partition
        if partition is None and item.partition_key is not None:
            partition = self._partition_of(item.topic, item.partition_key)
        self._append(item.topic, item.key, value, [(k, v.encode()) for k, v in headers.items()], partition)

    def _append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        partition: int | None,
    ) -> None:
        if topic not in TOPICS and topic.removesuffix(".dlq") not in TOPICS:
            raise ValueError(f"no such topic: {topic!r}")
        part = partition if partition is not None else self._partition_of(topic, key)
        offset = self._offsets[(topic, part)]
        self._offsets[(topic, part)] = offset + 1
        record: Record = ConsumerRecord(
            topic=topic,
            partition=part,
            offset=offset,
            timestamp=int(time.time() * 1000),
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value),
            headers=headers,
        )
        self.records[topic].append(record)
        self._pending.extend((s, record) for s in self._subscribers.get(topic, ()))

    @staticmethod
    def _partition_of(topic: str, key: bytes | None) -> int:
        """The default partitioner's choice (murmur2 of the key), over the topic's partition count."""
        partitions = TOPICS[topic.removesuffix(".dlq")].partitions
        return (murmur2(key) & 0x7FFFFFFF) % partitions if key else 0

    # --- delivery -------------------------------------------------------------------------------------
    async def drain(self) -> None:
        """Deliver until no subscriber has anything left, outputs of outputs included."""
        deliveries = 0
        while self._pending:
            deliveries += 1
            if deliveries > MAX_DELIVERIES:
                raise RuntimeError("the bus did not settle: a handler keeps feeding its own topic")
            subscriber, batch = self._next_batch()
            await self._deliver(subscriber, batch)

    def _next_batch(self) -> tuple[_Subscriber, list[Record]]:
        """The oldest pending record and the ones after it of the same subscriber and partition."""
        first, record = self._pending[0]
        batch: list[Record] = []
        rest: deque[tuple[_Subscriber, Record]] = deque()
        for sub, rec in self._pending:
            same = sub is first and rec.topic == record.topic and rec.partition == record.partition
            if same and len(batch) < self.max_batch:
                batch.append(rec)
            else:
                rest.append((sub, rec))
        self._pending = rest
        return first, batch

    async def _deliver(self, subscriber: _Subscriber, batch: list[Record]) -> None:
        good: list[Inbound] = []
        dead: list[DeadLetter] = []
        for rec in batch:
            try:
                event = decode(TOPICS[subscriber.spec.topic], rec.value or b"")
            except EventDecodeError as exc:
                dead.append(subscriber.dead_letters.of(rec, exc.reason, exc, None))
                continue
            good.append(Inbound(rec, event, otel_context.get_current()))
        outputs, refused = await self._handle(subscriber, good)
        dlq = TOPICS[subscriber.spec.topic].dlq
        for item in [*outputs, *(Outbound(dlq, Worker._dl_key(d), d) for d in [*dead, *refused])]:
            self.emit(item)

    @staticmethod
    async def _handle(
        subscriber: _Subscriber, items: list[Inbound]
    ) -> tuple[list[Outbound], list[DeadLetter]]:
        """The batch, or, when it fails permanently, each record alone so only the bad ones are refused
        (as the worker does)."""
        if not items:
            return [], []
        try:
            return await subscriber.handler(items), []
        except PermanentError:
            pass
        outputs: list[Outbound] = []
        dead: list[DeadLetter] = []
        for item in items:
            try:
                outputs.extend(await subscriber.handler([item]))
            except PermanentError as exc:
                dead.append(subscriber.dead_letters.of(item.record, exc.reason, exc, item.event))
        return outputs, dead

    # --- reading --------------------------------------------------------------------------------------
    def events(self, topic: str) -> list[Any]:
        """Every event published on `topic`, decoded as its consumers decode them."""
        return [decode(TOPICS[topic], r.value or b"") for r in self.records.get(topic, [])]

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The dead letters of `topic`'s consumers (`<topic>.dlq`)."""
        return [
            DeadLetter.model_validate_json(r.value or b"") for r in self.records.get(TOPICS[topic].dlq, [])
        ]
