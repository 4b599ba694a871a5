"""Admission control: refuse new queries (429 + Retry-After) before they reach Kafka when the serving plane
is saturated.

Signals, checked on every submission (fair per tenant first, the global limits as the last resort):
- tenant in-flight: queries of the caller's tenant accepted here without a final answer
  (`serving.tenant_max_inflight`): one tenant's burst gets its own 429s (`tenant_inflight`);
- tenant share under lag: once the serving lag passes `serving.tenant_lag_share * max_lag`, a tenant
  holding more than its fair share of this gateway's in-flight queries (in-flight / tenants in flight,
  the caller's counted) is refused (`tenant_lag`) while the others are still admitted;
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway import metrics
from ragstream.runtime.kafka_admin import group_id
from ragstream.runtime.offsets import LagReader
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
    reason: str  # tenant_inflight | tenant_lag | inflight | lag (metrics label; alerts match on it)
    retry_after_s: int
    detail: str  # for logs only: other tenants' load never reaches a client


def _no_tenants() -> Mapping[str, int]:
    return {}


class Admission:
    """Decides, without I/O, whether a new query may be published now."""

    def __init__(
        self,
        cfg: ServingSettings,
        inflight: Callable[[], int],
        probe: LagProbe | None = None,
        interval_s: float = 2.0,
        tenants: Callable[[], Mapping[str, int]] = _no_tenants,
    ) -> None:
        self.cfg = cfg
        self.inflight = inflight
        self.tenants = tenants  # tenant -> its queries in flight here (tenants with none absent)
        self.probe = probe
        self.interval_s = interval_s
        self.lag = 0
        self._task: asyncio.Task[None] | None = None

    def check(self, request_class: str, tenant_id: str | None = None) -> Rejection | None:
        """None when admitted; otherwise why not and when to retry (tenant limits before global ones)."""
        cfg = self.cfg
        share = 1.0 if request_class == "interactive" else 0.5
        inflight = self.inflight()
        metrics.INFLIGHT.set(inflight)
        lag_wait = min(60, max(1, math.ceil(self.lag / max(1, cfg.max_lag))))
        if tenant_id is not None:
            per_tenant = self.tenants()
            mine = per_tenant.get(tenant_id, 0)
            if mine >= max(1, int(cfg.tenant_max_inflight * share)):
                return Rejection("tenant_inflight", 1, f"tenant {tenant_id}: {mine} queries in flight")
            if mine and self.lag > cfg.tenant_lag_share * cfg.max_lag * share:
                active = len(per_tenant) + (tenant_id not in per_tenant)
                fair = sum(per_tenant.values()) / active
                if mine > fair:
                    return Rejection(
                        "tenant_lag",
                        lag_wait,
                        f"tenant {tenant_id}: {mine} in flight, over its share {fair:.1f} (lag {self.lag})",
                    )
        if inflight >= max(1, int(cfg.max_inflight * share)):
            return Rejection("inflight", 1, f"{inflight} queries in flight")
        if self.lag > cfg.max_lag * share:
            return Rejection("lag", lag_wait, f"serving backlog of {self.lag} records")
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


class StaticLag:
    """An in-memory LagProbe whose lag is whatever `value` is set to (component tests, local tools)."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def lag(self) -> int:
        return self.value


class KafkaLagProbe:
    """Committed offsets of the serving groups vs the end offsets of their input topics."""

    def __init__(
        self, settings: Settings, names: Sequence[str] = SERVING_GROUPS, group_suffix: str = ""
    ) -> None:
        self.settings = settings
        self.specs = [CONSUMERS[n] for n in names]
        self.group_suffix = group_suffix
        self._reader = LagReader(settings.kafka, client_id=f"{settings.kafka.client_id}-gateway-lag")

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()

    async def lag(self) -> int:
        k = self.settings.kafka
        total = 0
        for spec in self.specs:
            group = group_id(k, spec.name, self.group_suffix)
            # A group that never committed would start at the log start (earliest reset).
            total += await self._reader.lag(group, k.topic_prefix + spec.topic, uncommitted="log_start")
        return total
