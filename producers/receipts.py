"""Follow ingestion receipts until every published change is searchable (`publish --wait`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ragstream.runtime import kafka
from ragstream.runtime.offsets import tail
from ragstream.settings import Settings
from schemas.errors import EventDecodeError, decode
from schemas.ingestion import DocumentDeleted, DocumentIndexed
from schemas.topics import INGEST_RECEIPTS


class ReceiptWatcher:
    """Positioned at the end of the receipts topic *before* publishing, so no receipt is missed."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka.topic_prefix + INGEST_RECEIPTS.name
        self._c = kafka.consumer(
            settings.kafka, enable_auto_commit=False, client_id=f"{settings.kafka.client_id}-receipts"
        )

    async def start(self) -> None:
        await self._c.start()
        await tail(self._c, (self.topic,))

    async def stop(self) -> None:
        await self._c.stop()

    async def wait_for(
        self,
        correlation_ids: dict[str, float],
        timeout_s: float,
        on_receipt: Callable[[DocumentIndexed | DocumentDeleted, float], None] | None = None,
    ) -> dict[str, DocumentIndexed | DocumentDeleted]:
        """correlation id -> publish time (monotonic). Returns the receipts found before the timeout."""
        found: dict[str, DocumentIndexed | DocumentDeleted] = {}
        deadline = time.monotonic() + timeout_s
        while len(found) < len(correlation_ids) and time.monotonic() < deadline:
            batch = await self._c.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    try:
                        receipt = decode(INGEST_RECEIPTS, rec.value or b"")
                    except EventDecodeError:
                        continue
                    cid = receipt.correlation_id
                    if cid in correlation_ids and cid not in found:
                        found[cid] = receipt
                        if on_receipt:
                            on_receipt(receipt, time.monotonic() - correlation_ids[cid])
        return found
