"""Shared benchmark helpers: an isolated namespace on the running stack and percentiles."""

from __future__ import annotations

import math
import signal
import socket
import uuid
from types import FrameType

from application.stack.secrets import load_settings
from ragstream.adapters.store import drop_index
from ragstream.core.stats import percentiles
from ragstream.runtime.kafka_admin import drop_topics
from ragstream.settings import Settings


def isolated_settings(base: Settings | None = None, partitions: int = 2) -> Settings:
    s = base or load_settings()
    tag = uuid.uuid4().hex[:8]
    kafka = s.kafka.model_copy(update={"topic_prefix": f"bench{tag}.", "default_partitions": partitions})
    index = s.index.model_copy(update={"generation": f"b{tag}"})
    return s.model_copy(update={"kafka": kafka, "index": index})


def quantile_fields(
    name: str, values: list[float], *, unit: str = "ms", digits: int = 2, qs: tuple[int, ...] = (50, 95)
) -> dict[str, float]:
    """`{name}_p50_{unit}`, `{name}_p95_{unit}`, ... rounded: the runtime's one percentile definition
    (ragstream.core.stats), NaN for no samples so an empty run never reads as 0 ms."""
    got = percentiles(values, qs, empty=math.nan)
    return {f"{name}_{k}_{unit}": round(v, digits) for k, v in got.items()}


async def cleanup(s: Settings) -> None:
    """Drop what an isolated run created: its index generation's collections and its topics."""
    drop_index(s)
    await drop_topics(s.kafka, [s.kafka.topic_prefix])


def exit_on_sigterm() -> None:
    """A bench stopped with SIGTERM (`kill`, a CI timeout) still runs its `finally` blocks: its own
    stack and worker processes are stopped instead of being left behind as orphans."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports nothing listens on now (bound once to port 0, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
