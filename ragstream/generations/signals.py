"""Quality and latency signals per index generation, so a canary can be compared before promotion.

Prometheus series labelled by generation (and by why the query went there: live, canary, tenant,
requested, static); `ragstream generation signals` reads the same facts back from the query topics.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Any

from prometheus_client import Counter, Histogram

from ragstream.core.stats import percentile

QUERIES = Counter(
    "ragstream_generation_queries", "Queries served per index generation", ["generation", "route"]
)
EMPTY = Counter(
    "ragstream_generation_empty_results", "Queries with no authorized passage per generation", ["generation"]
)
RETRIEVAL_LATENCY = Histogram(
    "ragstream_generation_retrieval_seconds",
    "Retrieval latency per generation",
    ["generation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
ANSWERS = Counter(
    "ragstream_generation_answers", "Final answers per generation and outcome", ["generation", "outcome"]
)
ANSWER_LATENCY = Histogram(
    "ragstream_generation_answer_seconds",
    "Retrieval-to-answer latency per generation",
    ["generation"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


def observe_retrieval(generation: str, route: str, seconds: float, passages: int) -> None:
    """One retrieval served from `generation`."""
    QUERIES.labels(generation, route).inc()
    RETRIEVAL_LATENCY.labels(generation).observe(seconds)
    if passages == 0:
        EMPTY.labels(generation).inc()


def observe_answer(generation: str, abstained: bool, seconds: float) -> None:
    """One final answer produced from `generation`'s passages."""
    ANSWERS.labels(generation, "abstained" if abstained else "answered").inc()
    ANSWER_LATENCY.labels(generation).observe(seconds)


async def _read_since(settings: Any, topic: str, since_ms: int) -> list[Any]:
    from ragstream.runtime.kafka import consumer as kafka_consumer
    from ragstream.runtime.kafka_admin import partitions_of
    from ragstream.runtime.offsets import read_to_end
    from schemas.errors import EventDecodeError, decode

    kafka = settings.kafka
    consumer = kafka_consumer(kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, kafka.topic_prefix + topic)
        if not tps:
            return []
        found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        # A partition with nothing since `since_ms` has no offset here: nothing to read from it.
        starts = {tp: at.offset for tp, at in found.items() if at is not None}
        out: list[Any] = []
        async for r in read_to_end(consumer, starts, starts, max_records=2000):
            with contextlib.suppress(EventDecodeError):
                out.append(decode(topic, r.value or b""))
        return out
    finally:
        await consumer.stop()


async def report(settings: Any, since_s: float = 3600.0) -> dict[str, Any]:
    """Per generation over the last `since_s`: queries, empty-result rate, retrieval latency percentiles,
    answers, failures, abstention rate and mean groundedness, read from the query topics."""
    from schemas.topics import ANSWERS as ANSWERS_TOPIC
    from schemas.topics import QUERIES_RETRIEVED

    since_ms = int((time.time() - since_s) * 1000)
    retrieved = await _read_since(settings, QUERIES_RETRIEVED.name, since_ms)
    answers = await _read_since(settings, ANSWERS_TOPIC.name, since_ms)
    gen_of: dict[str, str] = {}
    stats: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "queries": 0,
            "empty": 0,
            "lat": [],
            "answers": 0,
            "abstained": 0,
            "failed": 0,
            "grounded": [],
        }
    )
    for ev in retrieved:
        g = stats[ev.generation]
        gen_of[ev.query.query_id] = ev.generation
        g["queries"] += 1
        g["empty"] += not ev.passages
        g["lat"].append(float(ev.timings_ms.get("retrieval", 0.0)))
    for ev in answers:
        if ev.type == "QueryAnswered":
            g = stats[ev.generation or gen_of.get(ev.query_id, "?")]
            g["answers"] += 1
            g["abstained"] += bool(ev.abstained)
            grounded = getattr(ev, "groundedness", None)
            if grounded is not None:
                g["grounded"].append(float(grounded))
        elif ev.type == "QueryFailed" and ev.query_id in gen_of:
            stats[gen_of[ev.query_id]]["failed"] += 1
    out = {}
    for gen, g in sorted(stats.items()):
        out[gen] = {
            "queries": g["queries"],
            "empty_rate": g["empty"] / g["queries"] if g["queries"] else 0.0,
            "retrieval_ms_p50": percentile(g["lat"], 50),
            "retrieval_ms_p95": percentile(g["lat"], 95),
            "answers": g["answers"],
            "failed": g["failed"],
            "abstain_rate": g["abstained"] / g["answers"] if g["answers"] else 0.0,
            "groundedness_mean": sum(g["grounded"]) / len(g["grounded"]) if g["grounded"] else None,
        }
    return {"since_s": since_s, "generations": out}
