"""Shared benchmark helpers: an isolated namespace on the running stack and percentiles."""

from __future__ import annotations

import uuid

from application.stack.secrets import load_settings
from ragstream.adapters.store import drop_index
from ragstream.runtime.kafka_admin import drop_topics
from ragstream.settings import Settings


def isolated_settings(base: Settings | None = None, partitions: int = 2) -> Settings:
    s = base or load_settings()
    tag = uuid.uuid4().hex[:8]
    kafka = s.kafka.model_copy(update={"topic_prefix": f"bench{tag}.", "default_partitions": partitions})
    index = s.index.model_copy(update={"generation": f"b{tag}"})
    return s.model_copy(update={"kafka": kafka, "index": index})


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


async def cleanup(s: Settings) -> None:
    """Drop what an isolated run created: its index generation's collections and its topics."""
    drop_index(s)
    await drop_topics(s.kafka, [s.kafka.topic_prefix])
