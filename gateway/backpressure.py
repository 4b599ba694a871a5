"""Admission control: refuse new queries (429 + Retry-After) before they reach Kafka when the serving plane
is saturated.

Two signals, checked on every submission:
- in-flight: queries this gateway accepted that have no final answer yet (`serving.max_inflight`);
- lag: records not yet committed by the serving consumer groups (retrieval, rerank, generation) on their
  input topics, summed, sampled every `interval_s` in the background (`serving.max_lag`).
`batch` queries yield first: they are refused at half of each threshold, keeping headroom for `interactive`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from gateway import metrics
from ragstream.runtime.kafka_admin import group_id, partitions_of
from ragstream.settings import ServingSettings, Settings
from schemas.topics import CONSUMERS

log = logging.getLogger(__name__)
SERVING_GROUPS = ("retrieval", "rerank", "generation")


class LagProbe(Protocol):
    """Total uncommitted records of the serving consumer groups."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def lag(self) -> int: ...


@dataclass(frozen=True)
class Rejection:
    reason: str  # inflight | lag (metrics label; alerts match on it)
    retry_after_s: int
    detail: str


class Admission:
    """Decides, without I/O, whether a new query may be published now."""

    def __init__(
        self,
        cfg: ServingSettings,
        inflight: Callable[[], int],
        probe: LagProbe | None = None,
        interval_s: float = 2.0,
    ) -> None:
        self.cfg = cfg
        self.inflight = inflight
        self.probe = probe
        self.interval_s = interval_s
        self.lag = 0
        self._task: asyncio.Task[None] | None = None

    def check(self, request_class: str) -> Rejection | None:
        """None when admitted; otherwise why not and when to retry."""
        share = 1.0 if request_class == "interactive" else 0.5
        inflight = self.inflight()
        metrics.INFLIGHT.set(inflight)
        if inflight >= max(1, int(self.cfg.max_inflight * share)):
            return Rejection("inflight", 1, f"{inflight} queries in flight; try again shortly")
        if self.lag > self.cfg.max_lag * share:
            wait = min(60, max(1, math.ceil(self.lag / max(1, self.cfg.max_lag))))
            return Rejection("lag", wait, f"serving backlog of {self.lag} records; try again later")
        return None

    async def start(self) -> None:
        if self.probe is None:
            return
        await self.probe.start()
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="lag-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.probe is not None:
            await self.probe.stop()

    async def refresh(self) -> None:
        """Sample the lag once (keeps the previous value when the broker does not answer)."""
        if self.probe is None:
            return
        try:
            self.lag = await self.probe.lag()
            metrics.LAG.set(self.lag)
        except Exception as exc:
            log.warning("lag probe failed: %s", exc)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.refresh()


class KafkaLagProbe:
    """Committed offsets of the serving groups vs the end offsets of their input topics."""

    def __init__(
        self, settings: Settings, names: Sequence[str] = SERVING_GROUPS, group_suffix: str = ""
    ) -> None:
        self.settings = settings
        self.specs = [CONSUMERS[n] for n in names]
        self.group_suffix = group_suffix
        k = settings.kafka
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=k.bootstrap_servers, client_id=f"{k.client_id}-gateway-lag"
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=k.bootstrap_servers, group_id=None, enable_auto_commit=False
        )
        self._tps: dict[str, list[TopicPartition]] = {}

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def lag(self) -> int:
        prefix = self.settings.kafka.topic_prefix
        total = 0
        for spec in self.specs:
            topic = prefix + spec.topic
            if topic not in self._tps:
                self._tps[topic] = await partitions_of(self._consumer, topic)
            tps = self._tps[topic]
            if not tps:
                continue
            committed = await self._admin.list_consumer_group_offsets(
                group_id(self.settings.kafka, spec.name, self.group_suffix), partitions=tps
            )
            ends = await self._consumer.end_offsets(tps)
            starts = await self._consumer.beginning_offsets(tps)
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
                total += max(0, ends[tp] - done)
        return total
