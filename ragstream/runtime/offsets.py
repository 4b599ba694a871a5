"""Where readers stand on a topic: a consumer group's lag, and a manual consumer following a topic's end.

`LagReader` is the one place lag is computed (the gateway's admission, a generation build's readiness, the
scaling benchmark's KEDA view); `tail` is the one way a follower (answer hub, query client, receipt
watcher) starts at the end of its topics without missing what is published right after; `read_to_end` is
the one way a reader (dead letters, a re-embedding plan, generation signals) reads partitions up to the end
offsets they have when it starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from ragstream.runtime import kafka
from ragstream.runtime.kafka_admin import partitions_of
from ragstream.settings import KafkaSettings

__all__ = ["GroupOffsets", "LagReader", "Uncommitted", "read_to_end", "tail"]

# What a partition without a committed offset counts from: "zero" is how KEDA's Kafka scaler counts with
# the earliest reset policy (lag = end offset); "log_start" is where such a group would really begin
# reading (the same unless retention or compaction removed the head of the log).
Uncommitted = Literal["zero", "log_start"]


@dataclass(frozen=True)
class GroupOffsets:
    """One group on one topic, by partition: end offsets, committed offsets (only where there is a commit)
    and, when asked for, the log start offsets."""

    ends: dict[int, int]
    committed: dict[int, int]
    starts: dict[int, int]

    def lag(self, uncommitted: Uncommitted = "zero") -> int:
        total = 0
        for partition, end in self.ends.items():
            done = self.committed.get(partition)
            if done is None:
                done = self.starts.get(partition, 0) if uncommitted == "log_start" else 0
            total += max(0, end - done)
        return total


class LagReader:
    """Committed offsets of consumer groups against the end offsets of topics (full names), with one admin
    client and one unsubscribed consumer kept open for repeated polls."""

    def __init__(self, settings: KafkaSettings, client_id: str | None = None) -> None:
        cid = client_id or f"{settings.client_id}-lag"
        self.admin = kafka.admin(settings, client_id=cid)
        self.consumer = kafka.consumer(settings, client_id=cid, enable_auto_commit=False)
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()

    async def stop(self) -> None:
        try:
            await self.consumer.stop()
        finally:
            await self.admin.close()

    async def __aenter__(self) -> LagReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def partitions(self, topic: str) -> list[TopicPartition]:
        """The topic's partitions (cached once found; a missing topic is looked up again next time)."""
        if topic not in self._partitions:
            found = await partitions_of(self.consumer, topic)
            if not found:
                return []
            self._partitions[topic] = found
        return self._partitions[topic]

    async def end_offsets(self, topic: str) -> dict[int, int]:
        tps = await self.partitions(topic)
        ends = await self.consumer.end_offsets(tps) if tps else {}
        return {tp.partition: int(off) for tp, off in ends.items()}

    async def offsets(self, group: str, topic: str, *, starts: bool = False) -> GroupOffsets:
        """End offsets first, then the commits: a group that committed past what was the end when we
        looked has caught up with everything that existed then (lag 0), never a negative lag."""
        tps = await self.partitions(topic)
        if not tps:
            return GroupOffsets({}, {}, {})
        ends = await self.consumer.end_offsets(tps)
        found = await self.admin.list_consumer_group_offsets(group, partitions=tps)
        begins = await self.consumer.beginning_offsets(tps) if starts else {}
        return GroupOffsets(
            ends={tp.partition: int(off) for tp, off in ends.items()},
            committed={tp.partition: int(m.offset) for tp, m in found.items() if m.offset >= 0},
            starts={tp.partition: int(off) for tp, off in begins.items()},
        )

    async def lag(self, group: str, topic: str, uncommitted: Uncommitted = "zero") -> int:
        return (await self.offsets(group, topic, starts=uncommitted == "log_start")).lag(uncommitted)


async def tail(
    consumer: AIOKafkaConsumer, topics: Iterable[str], *, missing_ok: bool = True
) -> list[TopicPartition]:
    """Assign every partition of `topics` (full names) to an unsubscribed consumer and position it at
    their ends. The positions are resolved now, not lazily at the first fetch: whatever is published
    after this returns (the query we are about to send, the document we are about to publish) is read."""
    tps: list[TopicPartition] = []
    for topic in topics:
        found = await partitions_of(consumer, topic)
        if not found and not missing_ok:
            raise RuntimeError(f"topic {topic} does not exist")
        tps += found
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    return tps


async def read_to_end(
    consumer: AIOKafkaConsumer,
    tps: Iterable[TopicPartition],
    starts: Mapping[TopicPartition, int] | None = None,
    *,
    max_records: int | None = None,
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of `tps` from `starts` (default: the log start) up to each partition's end offset as it
    is when this begins; records published meanwhile are not waited for. Assigns `tps` to the consumer."""
    tps = list(tps)
    if not tps:
        return
    ends = await consumer.end_offsets(tps)
    consumer.assign(tps)
    if starts is None:
        await consumer.seek_to_beginning(*tps)
    else:
        for tp in tps:
            consumer.seek(tp, starts.get(tp, ends[tp]))
    pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=500, max_records=max_records)
        for tp, records in batch.items():
            for record in records:
                if record.offset < ends[tp]:
                    yield record
        pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
