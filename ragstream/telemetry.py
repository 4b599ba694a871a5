"""OpenTelemetry set-up and the span helpers every stage shares.

One query is one trace (gateway -> retrieval -> rerank -> generation -> answer) and one document change is
one trace (publish -> normalize -> chunk -> embed -> index): W3C trace context travels in Kafka record
headers (`traceparent`), injected by the producer from the context an `Outbound` was created in and
extracted by the worker, which opens one CONSUMER span per record as the child of the upstream span.
Spans carry counts, ids, scores and model names, never document text, prompts or secrets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from ragstream.core.stats import percentile
from ragstream.settings import TelemetrySettings

# The span a worker opens per record, named for the stage the seed lists.
STAGE_SPANS = {
    "normalizer": "normalize",
    "chunker": "chunk",
    "embedder": "embed",
    "retrieval": "retrieval",
    "rerank": "rerank",
    "generation": "answer",
}

_configured = False


def setup_tracing(cfg: TelemetrySettings, *, processor: SpanProcessor | None = None) -> TracerProvider | None:
    """Install the process-wide tracer provider once: OTLP/HTTP when an endpoint is configured, plus any
    extra processor (tests pass an in-memory exporter). Without either, tracing stays a no-op."""
    global _configured
    if _configured:
        current = trace.get_tracer_provider()
        if processor is not None and isinstance(current, TracerProvider):
            current.add_span_processor(processor)
        return current if isinstance(current, TracerProvider) else None
    if cfg.otlp_endpoint is None and processor is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": cfg.service_name}))
    if cfg.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = cfg.otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _configured = True
    return provider


@contextlib.contextmanager
def within(ctx: otel_context.Context) -> Iterator[None]:
    """Make `ctx` (a record's span context) current, so child spans and outputs created here join its
    trace."""
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


def score_summary(scores: list[float]) -> dict[str, float]:
    """Min / median / max of a score list, for span attributes (never the passages themselves)."""
    if not scores:
        return {}
    return {"min": min(scores), "p50": percentile(scores, 50), "max": max(scores)}
