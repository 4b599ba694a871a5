"""Gateway metrics (Prometheus). Labels stay bounded: route templates, status codes, enums; never ids."""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from gateway.models import ErrorCode

REQUESTS = Counter("ragstream_gateway_requests", "HTTP requests by route and status", ["route", "status"])
# The closed set of `reason` label values: every error `code` of the body (`gateway.models.ErrorCode`),
# plus `invalid` (422, whose body is FastAPI's validation list).
REJECTION_REASONS = (*get_args(ErrorCode), "invalid")
REJECTED = Counter(
    "ragstream_gateway_rejections",
    "Requests refused (before reaching Kafka) or failed, by reason",
    ["reason"],
)
for _reason in REJECTION_REASONS:
    REJECTED.labels(_reason)  # every reason exported from start-up (rates need the zero)


def rejected(reason: str) -> None:
    """Count one refusal; a reason outside the closed set is counted as `internal` (labels stay bounded)."""
    REJECTED.labels(reason if reason in REJECTION_REASONS else "internal").inc()


ACCEPTED = Counter("ragstream_gateway_queries_accepted", "Queries published", ["request_class"])
INFLIGHT = Gauge("ragstream_gateway_inflight", "Queries accepted by this gateway without a final answer")
LAG = Gauge("ragstream_gateway_serving_lag", "Consumer lag summed over the serving groups (last sample)")
FIRST_DELTA = Histogram(
    "ragstream_gateway_first_delta_seconds",
    "Query accepted -> first streamed tokens",
    ["request_class"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
ANSWER_LATENCY = Histogram(
    "ragstream_gateway_answer_seconds",
    "Query accepted -> final event",
    ["request_class", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
