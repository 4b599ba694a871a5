"""A batch that fails for one record's own reason is halved down to that record (bench.fuzz: one call per
record of the batch made the embedder fall minutes behind); effects keep their order."""

from __future__ import annotations

import math

import pytest
from aiokafka import ConsumerRecord
from opentelemetry import context as otel_context

from ragstream.runtime.errors import PermanentError
from ragstream.runtime.worker import Inbound, Outbound, Worker
from ragstream.settings import Settings
from schemas.ingestion import DocumentRemoved
from schemas.topics import CONSUMERS, DOCUMENTS_NORMALIZED

pytestmark = pytest.mark.unit


def _item(offset: int) -> Inbound:
    rec = ConsumerRecord(
        topic="t",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=b"{}",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=2,
        headers=[],
    )
    return Inbound(rec, DocumentRemoved(tenant_id="t1", document_id=f"d{offset}"), otel_context.get_current())


async def test_one_bad_record_in_64_costs_log_calls_and_keeps_order() -> None:
    calls: list[int] = []

    async def handler(items: list[Inbound]) -> list[Outbound]:
        calls.append(len(items))
        if any(i.record.offset == 37 for i in items):
            raise PermanentError("rejected_by_fuzz", "this one can never work")
        return [Outbound(DOCUMENTS_NORMALIZED.name, b"k", i.event) for i in items]

    worker = Worker(CONSUMERS["normalizer"], handler, Settings(), group="g")
    outputs, dead = await worker._handle([_item(n) for n in range(64)])

    assert [d.original_offset for d in dead] == [37] and dead[0].reason == "rejected_by_fuzz"
    assert [o.event.document_id for o in outputs] == [f"d{n}" for n in range(64) if n != 37]
    assert len(calls) <= 2 * math.log2(64) + 2, calls  # not 1 + 64
