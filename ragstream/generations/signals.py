"""Quality and latency signals per index generation, so a canary can be compared before promotion.

Prometheus series labelled by generation (and by why the query went there: live, canary, tenant,
requested, static); `ragstream generation signals` reads the same facts back from the query topics.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
