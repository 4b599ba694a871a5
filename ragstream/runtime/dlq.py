"""Reading and replaying dead letters (the records every consumer parks in `<topic>.dlq`)."""

from __future__ import annotations

import base64
import hashlib

from ragstream.runtime import kafka
from ragstream.runtime.kafka_admin import partitions_of
from ragstream.runtime.offsets import read_to_end
from ragstream.settings import Settings
from schemas.dlq import DeadLetter
from schemas.topics import TOPICS


async def read_dead_letters(settings: Settings, topics: list[str] | None = None) -> list[DeadLetter]:
    """Every dead letter currently retained, oldest first per topic."""
    prefix = settings.kafka.topic_prefix
    names = [prefix + t.dlq for t in TOPICS.values()] if topics is None else topics
    consumer = kafka.consumer(settings.kafka, enable_auto_commit=False)
    await consumer.start()
    out: list[DeadLetter] = []
    try:
        tps = [tp for n in names for tp in await partitions_of(consumer, n)]
        async for rec in read_to_end(consumer, tps):
            try:
                out.append(DeadLetter.model_validate_json(rec.value or b""))
            except ValueError:
                continue
    finally:
        await consumer.stop()
    return out


class NotReplayableError(ValueError):
    """The dead letter keeps only a prefix of its record: re-publish the change from its source."""


def check_replayable(dead: DeadLetter) -> bytes:
    """The original bytes, verified against the recorded length and sha256 when the letter has them."""
    raw = base64.b64decode(dead.raw_b64)
    if dead.raw_truncated:
        raise NotReplayableError(
            f"dead letter {dead.dead_letter_id} keeps {len(raw)} of {dead.raw_length} bytes "
            "(the record was too large to keep whole); re-publish that change from its source"
        )
    if dead.raw_sha256 and hashlib.sha256(raw).hexdigest() != dead.raw_sha256:
        raise NotReplayableError(f"dead letter {dead.dead_letter_id}: raw bytes do not match their sha256")
    return raw


async def replay(settings: Settings, dead: DeadLetter) -> None:
    """Send the original bytes back to the original topic (after the cause was fixed)."""
    raw = check_replayable(dead)
    producer = kafka.producer(settings.kafka, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        headers = [(k, v.encode()) for k, v in dead.original_headers.items()]
        headers.append(("ragstream-replayed-from", dead.dead_letter_id.encode()))
        await producer.send_and_wait(
            dead.original_topic,
            raw,
            key=base64.b64decode(dead.original_key_b64) if dead.original_key_b64 else None,
            partition=dead.original_partition,
            headers=headers,
        )
    finally:
        await producer.stop()
