"""Prometheus metrics shared by every stage. Labels stay bounded: stage, outcome, reason (enums), never
tenant ids (freshness uses a hashed tenant bucket, so thousands of tenants map to at most 32 series)."""

from __future__ import annotations

import zlib

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("ragstream_stage_events", "Events handled per stage", ["stage", "outcome"])
DURATION = Histogram("ragstream_stage_duration_seconds", "Handling time per batch", ["stage"])
BATCH = Histogram(
    "ragstream_stage_batch_size",
    "Records per handled batch",
    ["stage"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
DEAD_LETTERS = Counter("ragstream_dead_letters", "Records sent to a dead-letter topic", ["stage", "reason"])
RETRIES = Counter("ragstream_stage_retries", "Transient failures retried", ["stage"])
# Handler failures by class (transient, permanent, unknown): what the retry ladder saw.
HANDLER_ERRORS = Counter("ragstream_handler_errors", "Handler failures by error class", ["stage", "class"])
PARTITION_PAUSED = Gauge(
    "ragstream_partition_paused",
    "1 while a partition is held on a record whose retry budget is spent (worker.on_retries_exhausted=pause)",
    ["stage"],
    multiprocess_mode="livemax",
)
CONSUMER_STUCK = Gauge(
    "ragstream_consumer_stuck",
    "1 while this consumer has lag and made no progress for worker.stuck_after_s",
    ["stage"],
    multiprocess_mode="livemax",
)
FRESHNESS = Histogram(
    "ragstream_freshness_seconds",
    "Source event time to searchable",
    ["tenant_bucket"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
)
EMBED_LATENCY = Histogram("ragstream_embedding_seconds", "Embedding call latency", ["model"])
EMBED_TOKENS = Counter("ragstream_embedding_tokens", "Tokens embedded", ["model"])
# 1 for the backend each embedding model runs on in this process (chosen at start-up by the probe or the
# settings); max over processes, so a fleet's mix of backends shows as one series per (model, backend).
EMBED_BACKEND = Gauge(
    "ragstream_embedding_backend",
    "Embedding backend in use (1), per model",
    ["model", "backend"],
    multiprocess_mode="livemax",
)
# 1 for the backend single texts (queries) run on: the probe's fastest for one text, of the same class.
EMBED_QUERY_BACKEND = Gauge(
    "ragstream_embedding_query_backend",
    "Embedding backend single texts (queries) run on (1), per model",
    ["model", "backend"],
    multiprocess_mode="livemax",
)
# The start-up probe's figures per backend (texts/s relative to torch fp32, mean cosine to fp32 vectors):
# why `auto` picked what ragstream_embedding_backend shows, per host.
EMBED_PROBE_SPEEDUP = Gauge(
    "ragstream_embedding_probe_speedup",
    "Start-up probe: backend texts/s divided by torch fp32's, per model",
    ["model", "backend"],
    multiprocess_mode="livemax",
)
EMBED_PROBE_COSINE = Gauge(
    "ragstream_embedding_probe_cosine",
    "Start-up probe: mean cosine of the backend's vectors to torch fp32's, per model",
    ["model", "backend"],
    multiprocess_mode="livemin",
)
# Queries whose generation was built by another embedding model or revision than any backend this worker
# can run: served by BM25 alone rather than with vectors that do not match the index.
EMBED_INCOMPATIBLE = Counter(
    "ragstream_embedding_incompatible_queries",
    "Queries served without dense search: no embedder matching their generation's embedding revision",
    ["reason"],
)
NORMALIZED = Counter(
    "ragstream_normalized_documents", "Documents normalized per format", ["format", "outcome"]
)

CONSUMER_LAG = Gauge(
    "ragstream_consumer_lag",
    "Records behind the log end, for the partitions this process owns (sum over replicas per group)",
    ["group", "topic"],
    multiprocess_mode="livesum",
)
QUERY_LATENCY = Histogram(
    "ragstream_query_latency_seconds",
    "Request accepted to final answer, by request class and outcome",
    ["request_class", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300),
)

TENANT_BUCKETS = 32


def tenant_bucket(tenant_id: str) -> str:
    return f"b{zlib.crc32(tenant_id.encode()) % TENANT_BUCKETS:02d}"
