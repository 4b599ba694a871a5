"""Rerank consumer.

In:  ragstream.query.retrieved.v1 (QueryRetrieved)
Out: ragstream.query.reranked.v1 (QueryReranked)
Group: ragstream.rerank. Ack: commit after the output is acknowledged. Idempotency: pure function of input.
Per request class a candidate cap and a time budget: when reranking would break the deadline it keeps the
retrieval order and says why (`fallback_reason`, also on the trace span).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from opentelemetry import trace
from prometheus_client import Counter, Histogram

from ragstream.core.fuse import Candidate
from ragstream.ports import Reranker
from ragstream.runtime.deps import Deps, Need, required
from ragstream.runtime.worker import Handler, Inbound, Outbound
from ragstream.settings import ServingSettings
from ragstream.telemetry import within
from schemas.envelope import utcnow
from schemas.serving import Passage, QueryReranked, QueryRetrieved
from schemas.topics import CONSUMERS

SPEC = CONSUMERS["rerank"]
NEEDS: tuple[Need, ...] = ("reranker",)
LATENCY = Histogram("ragstream_rerank_latency_seconds", "Reranker scoring time", ["reranker"])
FALLBACKS = Counter("ragstream_rerank_fallbacks", "Reranks skipped to keep a deadline", ["request_class"])
RERANK_TOP_K = Histogram(
    "ragstream_rerank_top_k",
    "Passages kept after rerank",
    ["request_class"],
    buckets=(0, 1, 2, 4, 8, 16, 32, 64),
)


@dataclass
class RerankStage:
    reranker: Reranker
    cfg: ServingSettings
    ms_per_candidate: float = 5.0  # learned online (EWMA) to predict whether a rerank fits the budget

    def rerank(self, ev: QueryRetrieved) -> QueryReranked:
        q = ev.query
        interactive = q.request_class == "interactive"
        cap = self.cfg.rerank_candidates_interactive if interactive else self.cfg.rerank_candidates_batch
        budget_ms = self.cfg.rerank_budget_ms_interactive if interactive else self.cfg.rerank_budget_ms_batch
        candidates = list(ev.passages[:cap])
        remaining_ms = (q.deadline_at - utcnow()).total_seconds() * 1000
        predicted = self.ms_per_candidate * len(candidates)
        reason: str | None = None
        t0 = time.perf_counter()
        if self.reranker.name == "none" or not candidates:
            ordered = candidates
        elif predicted > budget_ms or predicted > remaining_ms * 0.5:
            reason = (
                f"predicted {predicted:.0f} ms > budget {budget_ms} ms or half of {remaining_ms:.0f} ms left"
            )
            ordered = candidates
            FALLBACKS.labels(q.request_class).inc()
        else:
            scores = self._score(ev.rewritten, candidates)
            elapsed = (time.perf_counter() - t0) * 1000
            LATENCY.labels(self.reranker.name).observe(elapsed / 1000)
            self.ms_per_candidate = 0.8 * self.ms_per_candidate + 0.2 * elapsed / max(1, len(candidates))
            ordered = [
                p.model_copy(update={"score": s})
                for s, p in sorted(zip(scores, candidates, strict=True), key=lambda x: -x[0])
            ]
        kept = tuple(ordered[: q.top_k])
        RERANK_TOP_K.labels(q.request_class).observe(len(kept))
        span = trace.get_current_span()
        span.set_attribute("rerank.reranker", self.reranker.name)
        span.set_attribute("rerank.candidates", len(candidates))
        if reason:
            span.set_attribute("rerank.fallback", reason)
        return QueryReranked(
            **ev.caused(producer="rerank"),
            query=q,
            passages=kept,
            generation=ev.generation,
            reranker=self.reranker.name,
            fallback_reason=reason,
            timings_ms={**ev.timings_ms, "rerank": (time.perf_counter() - t0) * 1000},
        )

    def _score(self, query: str, candidates: list[Passage]) -> list[float]:
        """A reranker that fuses with the first stage (`lexical`) gets each passage's document, retrieval
        score and cosine; the others score the texts alone."""
        with_signals = getattr(self.reranker, "score_candidates", None)
        if with_signals is None:
            return self.reranker.score(query, [p.text for p in candidates])
        cands = [Candidate(p.document_id, p.text, p.score, p.relevance, p.title) for p in candidates]
        return list(with_signals(query, cands))


def component(deps: Deps) -> RerankStage:
    return RerankStage(required(deps.reranker, "reranker"), deps.settings.serving)


def build_handler(deps: Deps) -> Handler:
    return handler_for(component(deps))


def handler_for(stage: RerankStage) -> Handler:
    out_topic = SPEC.output
    assert out_topic is not None

    async def handle(items: list[Inbound]) -> list[Outbound]:
        outs = []
        for item in items:
            with within(item.context):
                out = await asyncio.to_thread(stage.rerank, item.event)
                outs.append(Outbound(out_topic, out.query.query_id.encode(), out))
        return outs

    return handle
