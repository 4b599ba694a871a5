"""Kafka helpers for tests: isolated topic namespaces and reading a topic to its end."""

from __future__ import annotations

import asyncio

from ragstream.runtime import kafka as clients
from ragstream.runtime.kafka_admin import desired_topics, ensure_topics, partitions_of
from ragstream.settings import KafkaSettings, Settings

# Topic prefixes handed out in this test session; the session drops their topics at the end.
ISSUED_PREFIXES: list[str] = []


def isolated(settings: Settings, unique: str, partitions: int = 2, **changes: object) -> Settings:
    """The same services under a fresh topic prefix: this test's topics are its own."""
    ISSUED_PREFIXES.append(f"t{unique}.")
    kafka = settings.kafka.model_copy(
        update={"topic_prefix": f"t{unique}.", "default_partitions": partitions}
    )
    return settings.model_copy(update={"kafka": kafka, **changes})


async def create_topics(kafka: KafkaSettings) -> None:
    await ensure_topics(kafka, desired_topics(kafka))


async def read_all(kafka: KafkaSettings, topic: str, expect: int = 0, timeout_s: float = 30.0) -> list:
    """Every record of `topic` (prefix applied), waiting until at least `expect` arrived."""
    consumer = clients.consumer(kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, kafka.topic_prefix + topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out.extend(records)
            ends = await consumer.end_offsets(tps)
            done = all([await consumer.position(tp) >= ends[tp] for tp in tps])
            if done and len(out) >= expect:
                break
        return out
    finally:
        await consumer.stop()


async def committed(kafka: KafkaSettings, group: str, topic: str) -> dict[int, int | None]:
    consumer = clients.consumer(kafka, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, kafka.topic_prefix + topic)
        return {tp.partition: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()
