"""The real broker: create a topic, produce and consume with aiokafka and with FastStream."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import NewTopic
from faststream.kafka import KafkaBroker

from ragstream.runtime import kafka
from ragstream.runtime.kafka_admin import ensure_topics
from schemas.ingestion import DocumentChanged

pytestmark = pytest.mark.integration


async def test_aiokafka_produce_consume(settings, unique) -> None:
    topic = f"test.aiokafka.{unique}"
    created = await ensure_topics(settings.kafka, [NewTopic(topic, 3, 1)])
    assert created == [topic]
    assert await ensure_topics(settings.kafka, [NewTopic(topic, 3, 1)]) == []

    producer = kafka.producer(settings.kafka, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=f"k{i % 2}".encode())
    finally:
        await producer.stop()

    consumer = kafka.consumer(
        settings.kafka,
        topic,
        group_id=f"g-{unique}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[tuple[bytes, bytes]] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < 10:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    got.extend((r.key, r.value) for r in records)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert sorted(v for _, v in got) == sorted(f"m{i}".encode() for i in range(10))
    # Same key -> same partition -> order kept per key.
    for key in (b"k0", b"k1"):
        values = [v for k, v in got if k == key]
        assert values == sorted(values, key=lambda v: int(v[1:]))


async def test_faststream_typed_round_trip(settings, unique) -> None:
    topic = f"test.faststream.{unique}"
    await ensure_topics(settings.kafka, [NewTopic(topic, 1, 1)])
    broker = KafkaBroker(settings.kafka.bootstrap_servers)
    received: asyncio.Queue[DocumentChanged] = asyncio.Queue()

    @broker.subscriber(topic, group_id=f"g-{unique}", auto_offset_reset="earliest")
    async def handle(event: DocumentChanged) -> None:
        await received.put(event)

    sent = DocumentChanged(tenant_id="tenant-a", op="upsert", document_id="d1", content_b64="aGk=")
    async with broker:
        await broker.start()
        await broker.publish(sent, topic, key=b"tenant-a/d1")
        got = await asyncio.wait_for(received.get(), 30)
    assert got == sent
