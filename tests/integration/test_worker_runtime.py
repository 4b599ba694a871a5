"""The worker loop on the real broker: DLQ with reasons, poison never blocks, commit only after durable."""

from __future__ import annotations

import asyncio
import json

import pytest

from ragstream.runtime import kafka
from ragstream.runtime.worker import Inbound, Outbound, PermanentError, TransientError, Worker
from schemas.dlq import DeadLetter
from schemas.ingestion import DocumentChanged, DocumentRemoved
from schemas.topics import CONSUMERS, DOCUMENTS_NORMALIZED, SOURCE_CHANGES
from tests.support.kafka import committed, create_topics, isolated, read_all

pytestmark = pytest.mark.integration
SPEC = CONSUMERS["normalizer"]


def _event(doc: str) -> bytes:
    return DocumentChanged(tenant_id="t1", op="delete", document_id=doc).model_dump_json().encode()


async def _run_until(worker: Worker, done, timeout_s: float = 30.0) -> None:
    await worker.start()
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not done():
                await asyncio.sleep(0.05)
    finally:
        await worker.stop()
        task.cancel()


async def test_dead_letters_and_poison_do_not_block(settings, unique) -> None:
    s = isolated(settings, unique, partitions=1)
    await create_topics(s.kafka)
    good = json.loads(_event("good-1"))
    bad_records = [
        b"{not json",
        json.dumps({**good, "schema_version": 7}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "tenant_id"}).encode(),
    ]
    flaky_calls = {"n": 0}

    async def handler(items: list[Inbound]) -> list[Outbound]:
        out = []
        for item in items:
            doc = item.event.document_id
            if doc == "poison":
                raise PermanentError("poison_pill", "this document can never be handled")
            if doc == "flaky" and flaky_calls["n"] < 2:
                flaky_calls["n"] += 1
                raise TransientError("dependency down")
            removed = DocumentRemoved(**item.event.caused(), document_id=doc)
            out.append(Outbound(DOCUMENTS_NORMALIZED.name, b"k", removed))
        return out

    producer = kafka.producer(s.kafka, acks="all")
    await producer.start()
    try:
        for value in [*bad_records, _event("poison"), _event("flaky"), _event("good-1"), _event("good-2")]:
            await producer.send_and_wait(s.kafka.topic_prefix + SOURCE_CHANGES.name, value, key=b"t1/x")
    finally:
        await producer.stop()

    worker = Worker(SPEC, handler, s, group=f"g-{unique}", max_batch=16)
    await _run_until(worker, lambda: worker.processed >= 7)

    outputs = await read_all(s.kafka, DOCUMENTS_NORMALIZED.name, expect=3)
    assert [json.loads(r.value)["document_id"] for r in outputs] == ["flaky", "good-1", "good-2"]
    dead = [
        DeadLetter.model_validate_json(r.value) for r in await read_all(s.kafka, SOURCE_CHANGES.dlq, expect=4)
    ]
    assert sorted(d.reason for d in dead) == sorted(
        ["malformed_json", "unsupported_schema_version", "missing_tenant", "poison_pill"]
    )
    for d in dead:
        assert d.stage == "normalizer" and d.original_topic == s.kafka.topic_prefix + SOURCE_CHANGES.name
        assert d.message and d.raw_b64
    assert {d.original_offset for d in dead} == {0, 1, 2, 3}
    assert (await committed(s.kafka, f"g-{unique}", SOURCE_CHANGES.name)) == {0: 7}


async def test_nothing_committed_until_effect_is_durable(settings, unique) -> None:
    s = isolated(settings, unique, partitions=1)
    await create_topics(s.kafka)
    calls = {"n": 0}

    async def down(items: list[Inbound]) -> list[Outbound]:
        calls["n"] += 1
        raise TransientError("store unavailable")

    producer = kafka.producer(s.kafka, acks="all")
    await producer.start()
    await producer.send_and_wait(s.kafka.topic_prefix + SOURCE_CHANGES.name, _event("d1"), key=b"t1/d1")
    await producer.stop()

    group = f"g-{unique}"
    worker = Worker(SPEC, down, s, group=group, backoff_max_s=0.2)
    await _run_until(worker, lambda: calls["n"] >= 4)
    assert worker.processed == 0
    assert (await committed(s.kafka, group, SOURCE_CHANGES.name)) == {0: None}

    seen: list[str] = []

    async def up(items: list[Inbound]) -> list[Outbound]:
        seen.extend(i.event.document_id for i in items)
        return []

    again = Worker(SPEC, up, s, group=group)
    await _run_until(again, lambda: again.processed >= 1)
    assert seen == ["d1"], "the record the failed worker never committed is delivered again"
    assert (await committed(s.kafka, group, SOURCE_CHANGES.name)) == {0: 1}
