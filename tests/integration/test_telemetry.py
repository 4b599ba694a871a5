"""Traces and metrics on the real stack.

One document change is one trace (publish -> normalize -> chunk -> embed -> index) and one query is one
trace (query.request -> retrieval -> rerank -> answer -> prompt.assemble / generation), linked across the
Kafka hops by the `traceparent` header; spans carry counts and scores, never document text. Every metric
the operations dashboards use is scraped over HTTP from the running workers.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.request

import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import start_http_server

from producers.publisher import DocumentPublisher
from ragstream.adapters.llm import ExtractiveStub
from ragstream.runtime.deps import Deps
from ragstream.runtime.queries import QueryClient
from ragstream.settings import TelemetrySettings
from ragstream.telemetry import setup_tracing
from schemas.ingestion import Acl
from tests.support.pipeline import Harness, eventually, isolated_pipeline_settings

pytestmark = pytest.mark.integration
ALL = ("normalizer", "chunker", "embedder", "retrieval", "rerank", "generation")
SECRET = "The quartz lighthouse keeper logs tides in a teal ledger every dusk."


class OverlapReranker:
    """A real (if simple) scorer: word overlap with the question, so rerank latency is observed."""

    name = "overlap"

    def score(self, query: str, texts: list[str]) -> list[float]:
        q = set(query.lower().split())
        return [float(len(q & set(t.lower().split()))) for t in texts]


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    exp = InMemorySpanExporter()
    setup_tracing(TelemetrySettings(service_name="ragstream-test"), processor=SimpleSpanProcessor(exp))
    return exp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def _trace(spans: tuple[ReadableSpan, ...], trace_id: int) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans if s.context.trace_id == trace_id}


def _child_of(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return child.parent is not None and child.parent.span_id == parent.context.span_id


async def test_document_change_and_query_are_one_trace_each(settings, unique, embedder, tmp_path, exporter):
    s = isolated_pipeline_settings(settings, unique)
    deps = Deps(s, llm=ExtractiveStub(), reranker=OverlapReranker())
    port = _free_port()
    start_http_server(port, addr="127.0.0.1")
    async with Harness(s, embedder, ALL, deps=deps, tmp=tmp_path) as h, QueryClient(s) as client:
        async with DocumentPublisher(s) as pub:
            await pub.upsert(
                "acme",
                "ledger.md",
                content=f"# Ledger\n\n{SECRET}".encode(),
                mime_type="text/markdown",
                acl=Acl(groups=("everyone",)),
            )
            await pub.send_raw(b"acme/broken", b"{not json")
        await eventually(lambda: h.store.has_tenant("acme") and h.store.get_state("acme", "ledger.md"))

        # -- the document change: publish -> normalize -> chunk -> embed -> index, one trace.
        def ingest_trace() -> dict[str, ReadableSpan] | None:
            spans = exporter.get_finished_spans()
            roots = [
                x
                for x in spans
                if x.name == "publish" and (x.attributes or {}).get("ragstream.document_id") == "ledger.md"
            ]
            if not roots:
                return None
            tree = _trace(spans, roots[0].context.trace_id)
            return tree if {"normalize", "chunk", "embed", "index"} <= tree.keys() else None

        tree = await eventually(ingest_trace, timeout_s=60)
        assert tree["publish"].parent is None
        assert _child_of(tree["normalize"], tree["publish"])
        assert _child_of(tree["chunk"], tree["normalize"])
        assert _child_of(tree["embed"], tree["chunk"])
        assert _child_of(tree["index"], tree["embed"])
        assert tree["index"].attributes["index.operation"] == "upsert"
        assert tree["index"].attributes["index.chunks_written"] >= 1
        assert tree["normalize"].attributes["messaging.consumer.group.name"].endswith("normalizer")

        # -- the query: query.request -> retrieval -> rerank -> answer -> prompt.assemble / generation.
        result = await client.ask(
            "acme", "alice", ("everyone",), "Where does the lighthouse keeper log tides?"
        )
        final = result["final"]
        assert final.type == "QueryAnswered" and not final.abstained and final.citations
        qid = final.query_id

        def query_trace() -> dict[str, ReadableSpan] | None:
            spans = exporter.get_finished_spans()
            roots = [
                x
                for x in spans
                if x.name == "query.request" and (x.attributes or {}).get("ragstream.query_id") == qid
            ]
            if not roots:
                return None
            tree = _trace(spans, roots[0].context.trace_id)
            need = {"retrieval", "rerank", "answer", "prompt.assemble", "generation"}
            return tree if need <= tree.keys() else None

        q = await eventually(query_trace, timeout_s=30)
        assert _child_of(q["retrieval"], q["query.request"])
        assert _child_of(q["rerank"], q["retrieval"])
        assert _child_of(q["answer"], q["rerank"])
        assert _child_of(q["prompt.assemble"], q["answer"])
        assert _child_of(q["generation"], q["answer"])
        r = q["retrieval"].attributes
        assert r["retrieval.top_k"] == 8 and r["retrieval.result_count"] >= 1
        assert r["retrieval.score.max"] >= r["retrieval.score.min"]
        g = q["generation"].attributes
        assert g["gen_ai.request.model"] == ExtractiveStub().model
        assert g["gen_ai.usage.input_tokens"] > 0 and g["gen_ai.usage.output_tokens"] > 0
        assert q["rerank"].attributes["rerank.reranker"] == "overlap"

        # Spans never carry document text (or anything of the secret sentence beyond common words).
        for span in exporter.get_finished_spans():
            for value in (span.attributes or {}).values():
                assert "lighthouse keeper" not in str(value).lower(), span.name

        # -- metrics: everything the dashboards use, scraped from the running workers' /metrics.
        await client.ask("acme", "alice", ("everyone",), "zxqv wplm unanswerable nonsense tokens")
        body = await asyncio.to_thread(_scrape, port)
        for name in (
            "ragstream_stage_events_total",
            "ragstream_stage_duration_seconds_bucket",
            "ragstream_stage_batch_size_bucket",
            "ragstream_dead_letters_total",
            "ragstream_consumer_lag",
            "ragstream_freshness_seconds_bucket",
            "ragstream_embedding_seconds_bucket",
            "ragstream_retrieval_results_bucket",
            "ragstream_retrieval_top_k_bucket",
            "ragstream_retrieval_empty_results_total",
            "ragstream_rerank_latency_seconds_bucket",
            "ragstream_rerank_top_k_bucket",
            "ragstream_prompt_tokens_bucket",
            "ragstream_completion_tokens_bucket",
            "ragstream_answer_groundedness_bucket",
            "ragstream_citation_support_bucket",
            "ragstream_query_latency_seconds_bucket",
        ):
            assert f"\n{name}" in body, name
        assert 'ragstream_dead_letters_total{reason="malformed_json",stage="normalizer"}' in body
        assert 'request_class="interactive"' in body
        # Tenants appear only as one of 32 hashed buckets, never by id.
        assert 'tenant="acme"' not in body and "tenant_bucket=" in body
        values = [
            float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith("ragstream_")
        ]
        assert np.isfinite(values).all()
