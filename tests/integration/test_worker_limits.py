"""Nothing stuck, on the real broker: an oversized record, an output too large for a record, a transient
error that outlives its budget and a permanent store error each become one dead letter within seconds and
the partition moves on; SIGTERM with the broker gone exits in time."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from pydantic import BaseModel

from ragstream.runtime import kafka
from ragstream.runtime.worker import Inbound, Outbound, TransientError, Worker
from ragstream.settings import Settings, WorkerSettings
from schemas.dlq import DeadLetter
from schemas.ingestion import DocumentChanged, DocumentRemoved
from schemas.topics import CONSUMERS, DOCUMENTS_NORMALIZED, SOURCE_CHANGES
from tests.support.kafka import committed, create_topics, isolated, read_all

pytestmark = pytest.mark.integration
SPEC = CONSUMERS["normalizer"]


def _delete(doc: str) -> bytes:
    return DocumentChanged(tenant_id="t1", op="delete", document_id=doc).model_dump_json().encode()


async def _send(s: Settings, *values: bytes) -> None:
    producer = kafka.producer(s.kafka, acks="all", max_request_size=16_000_000)
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(s.kafka.topic_prefix + SOURCE_CHANGES.name, v, key=b"t1/x")
    finally:
        await producer.stop()


async def _run_until(worker: Worker, done, timeout_s: float = 30.0) -> float:
    t0 = time.monotonic()
    await worker.start()
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not done():
                await asyncio.sleep(0.05)
    finally:
        await worker.stop()
        task.cancel()
    return time.monotonic() - t0


async def _passthrough(items: list[Inbound]) -> list[Outbound]:
    return [
        Outbound(
            DOCUMENTS_NORMALIZED.name,
            b"k",
            DocumentRemoved(**i.event.caused(), document_id=i.event.document_id),
        )
        for i in items
    ]


async def test_an_oversized_record_is_dead_lettered_and_the_partition_moves_on(settings, unique) -> None:
    s = isolated(settings, unique, partitions=1)
    await create_topics(s.kafka)
    huge = b"{" + b"x" * 12_500_000  # invalid, and larger than its dead letter could be with the payload
    await _send(s, huge, _delete("after"))
    worker = Worker(SPEC, _passthrough, s, group=f"g-{unique}")
    took = await _run_until(worker, lambda: worker.processed >= 2)
    assert took < 20, f"took {took:.1f}s"
    (dl,) = [DeadLetter.model_validate_json(r.value) for r in await read_all(s.kafka, SOURCE_CHANGES.dlq, 1)]
    assert dl.reason == "malformed_json" and dl.raw_truncated and dl.raw_length == len(huge)
    assert dl.raw_sha256 == hashlib.sha256(huge).hexdigest()
    out = await read_all(s.kafka, DOCUMENTS_NORMALIZED.name, expect=1)
    assert [json.loads(r.value)["document_id"] for r in out] == ["after"]
    assert (await committed(s.kafka, f"g-{unique}", SOURCE_CHANGES.name)) == {0: 2}


class _Big(BaseModel):
    text: str


async def test_an_output_too_large_for_a_record_is_a_dead_letter_not_a_retry(settings, unique) -> None:
    base = isolated(settings, unique, partitions=1)
    s = base.model_copy(update={"kafka": base.kafka.model_copy(update={"max_message_bytes": 300_000})})
    await create_topics(s.kafka)
    await _send(s, _delete("huge-output"), _delete("fine"))
    calls = {"n": 0}

    async def handler(items: list[Inbound]) -> list[Outbound]:
        calls["n"] += 1
        out = await _passthrough(items)
        if any(i.event.document_id == "huge-output" for i in items):
            out.append(Outbound(DOCUMENTS_NORMALIZED.name, b"k", _Big(text="x" * 400_000)))
        return out

    worker = Worker(SPEC, handler, s, group=f"g-{unique}")
    await _run_until(worker, lambda: worker.processed >= 2)
    (dl,) = [DeadLetter.model_validate_json(r.value) for r in await read_all(s.kafka, SOURCE_CHANGES.dlq, 1)]
    assert dl.reason == "output_too_large" and not dl.raw_truncated
    out = await read_all(s.kafka, DOCUMENTS_NORMALIZED.name, expect=1)
    assert [json.loads(r.value)["document_id"] for r in out] == ["fine"]
    assert calls["n"] <= 4, "batch once, then each record once (plus no retry loop)"


async def test_a_transient_error_outliving_its_budget_is_dead_lettered(settings, unique) -> None:
    base = isolated(settings, unique, partitions=1)
    s = base.model_copy(
        update={"worker": WorkerSettings(retry_max_attempts=3, retry_deadline_s=5, retry_backoff_max_s=0.2)}
    )
    await create_topics(s.kafka)
    await _send(s, _delete("always-down"), _delete("ok"))

    async def handler(items: list[Inbound]) -> list[Outbound]:
        if any(i.event.document_id == "always-down" for i in items):
            raise TransientError("dependency down")
        return await _passthrough(items)

    worker = Worker(SPEC, handler, s, group=f"g-{unique}")
    took = await _run_until(worker, lambda: worker.processed >= 2)
    assert took < 15
    (dl,) = [DeadLetter.model_validate_json(r.value) for r in await read_all(s.kafka, SOURCE_CHANGES.dlq, 1)]
    assert dl.reason == "retries_exhausted" and "dependency down" in dl.message
    assert [
        json.loads(r.value)["document_id"] for r in await read_all(s.kafka, DOCUMENTS_NORMALIZED.name, 1)
    ] == ["ok"]


async def test_pause_policy_holds_the_partition_instead(settings, unique) -> None:
    base = isolated(settings, unique, partitions=1)
    s = base.model_copy(
        update={
            "worker": WorkerSettings(
                retry_max_attempts=2,
                retry_deadline_s=1,
                retry_backoff_max_s=0.1,
                on_retries_exhausted="pause",
            )
        }
    )
    await create_topics(s.kafka)
    await _send(s, _delete("d1"))
    calls = {"n": 0}

    async def handler(items: list[Inbound]) -> list[Outbound]:
        calls["n"] += 1
        if calls["n"] < 8:  # down well past the budget, then back
            raise TransientError("dependency down")
        return await _passthrough(items)

    worker = Worker(SPEC, handler, s, group=f"g-{unique}")
    await _run_until(worker, lambda: worker.processed >= 1)
    assert calls["n"] == 8
    assert await read_all(s.kafka, SOURCE_CHANGES.dlq, 0, timeout_s=2) == []


async def test_a_store_rejection_is_dead_lettered_at_once(settings, unique, tmp_path) -> None:
    """A real Weaviate 4xx-class refusal (a vector of the wrong length) through the real embedder handler."""
    import numpy as np

    from consumers.ingestion import embedder as embedder_consumer
    from ragstream.adapters.embedder import HashEmbedder
    from ragstream.runtime.deps import Deps
    from ragstream.runtime.worker import Producer
    from schemas.ingestion import Acl, ChunkPayload, DocumentChunked, DocumentFacts
    from schemas.topics import DOCUMENTS_CHUNKED
    from tests.support.pipeline import drop_index, isolated_pipeline_settings

    s = isolated_pipeline_settings(settings, unique)
    await create_topics(s.kafka)
    from ragstream.adapters.store import open_store

    client, store = open_store(s)
    store.ensure_schema()
    store.ensure_tenant("t1")

    class Short(HashEmbedder):  # the second document's vectors do not match the collection's length
        batch_size = 1  # one encode call per document (the indexer groups by the embedder's batch)

        def embed(self, texts: list[str]) -> np.ndarray:
            out = super().embed(texts)
            return out[:, :16] if any("wrong" in t for t in texts) else out

    def chunked(doc: str, text: str) -> bytes:
        facts = DocumentFacts(document_id=doc, acl=Acl(groups=("everyone",)), content_sha256=doc)
        chunk = ChunkPayload(
            chunk_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{unique}/{doc}")),
            position=0,
            text=text,
            token_count=2,
        )
        return (
            DocumentChunked(
                tenant_id="t1", facts=facts, normalizer_version="1", policy_hash="p", chunks=(chunk,)
            )
            .model_dump_json()
            .encode()
        )

    producer = kafka.producer(s.kafka, acks="all")
    await producer.start()
    for doc, text in (("good", "fine words"), ("bad", "wrong length"), ("later", "more words")):
        await producer.send_and_wait(
            s.kafka.topic_prefix + DOCUMENTS_CHUNKED.name, chunked(doc, text), key=b"t1/d"
        )
    await producer.stop()
    spec = CONSUMERS["embedder"]
    out = Producer(s, None)
    handler = embedder_consumer.build_handler(Deps(s, store=store, embedder=Short()))
    worker = Worker(spec, handler, s, group=f"g-{unique}", producer=out)
    try:
        took = await _run_until(worker, lambda: worker.processed >= 3, timeout_s=60)
        (dl,) = [
            DeadLetter.model_validate_json(r.value) for r in await read_all(s.kafka, DOCUMENTS_CHUNKED.dlq, 1)
        ]
        assert dl.reason == "weaviate_rejected", dl.message
        assert took < 30
        assert store.get_state("t1", "later") is not None and store.get_state("t1", "bad") is None
    finally:
        client.close()
        drop_index(s)


def test_sigterm_with_the_broker_gone_exits_in_time(settings, unique, tmp_path) -> None:
    """A worker process whose broker disappears (an address nothing listens on after start-up is the same
    to the client as a dead broker) still exits within worker.shutdown_timeout_s of SIGTERM."""
    script = tmp_path / "w.py"
    script.write_text(
        "import asyncio, sys\n"
        "from ragstream.runtime.worker import Worker\n"
        "from ragstream.settings import Settings, KafkaSettings, WorkerSettings\n"
        "from schemas.topics import CONSUMERS\n"
        "async def h(items): return []\n"
        "async def main():\n"
        "    s = Settings(kafka=KafkaSettings(bootstrap_servers='127.0.0.1:1'),\n"
        "                 worker=WorkerSettings(shutdown_timeout_s=6))\n"
        "    w = Worker(CONSUMERS['normalizer'], h, s, group='g')\n"
        "    import signal\n"
        "    loop = asyncio.get_running_loop(); stop = asyncio.Event()\n"
        "    loop.add_signal_handler(signal.SIGTERM, stop.set)\n"
        "    start = asyncio.create_task(w.start())\n"
        "    print('ready', flush=True)\n"
        "    await stop.wait()\n"
        "    start.cancel()\n"
        "    await w.stop()\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(2)  # the client is now retrying a broker that is not there
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
