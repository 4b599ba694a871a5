"""Retrieval consumer.

In:  ragstream.query.requested.v1 (QueryRequested)
Out: ragstream.query.retrieved.v1 (QueryRetrieved); ragstream.query.answers.v1 (QueryFailed) on a bad request
Group: ragstream.retrieval. Ack: commit after the output is acknowledged. Idempotency: keyed by query id;
a replay re-runs a read-only search and publishes the same query id again (the gateway keeps the first).
Authorization is a where-filter inside the hybrid search: chunks the caller may not read are never returned.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from ragstream.adapters.embedding.compat import embedder_for_generation
from ragstream.adapters.errors import ADAPTER_ERRORS, translate
from ragstream.core.acl import caller_terms
from ragstream.core.fuse import doc_scores, feedback_docs, first_stage, rocchio, shares_terms
from ragstream.core.rewrite import with_history
from ragstream.generations.routing import GenerationRouter, Route
from ragstream.generations.signals import observe_retrieval
from ragstream.ports import AccessFilter, ChunkStore, DocumentState, Embedder, SearchHit
from ragstream.runtime import metrics
from ragstream.runtime.deps import Deps, Need, required
from ragstream.runtime.worker import Handler, Inbound, Outbound
from ragstream.settings import ServingSettings
from ragstream.telemetry import score_summary, within
from schemas.envelope import utcnow
from schemas.serving import Passage, QueryFailed, QueryRequested, QueryRetrieved
from schemas.topics import ANSWERS, CONSUMERS

SPEC = CONSUMERS["retrieval"]
NEEDS: tuple[Need, ...] = ("store", "embedder", "router")
RESULTS = Histogram(
    "ragstream_retrieval_results",
    "Passages returned per query",
    ["request_class"],
    buckets=(0, 1, 2, 4, 8, 16, 32, 64),
)
TOP_SCORE = Histogram(
    "ragstream_retrieval_top_score",
    "Best fused score per query",
    ["request_class"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
EMPTY = Counter("ragstream_retrieval_empty_results", "Queries with no authorized result", ["request_class"])
TOP_K = Histogram(
    "ragstream_retrieval_top_k", "Requested top-k", ["request_class"], buckets=(1, 4, 8, 16, 32, 64)
)


@dataclass
class Retriever:
    store: ChunkStore
    embedder: Embedder
    cfg: ServingSettings
    generation: str
    acl_in_search: bool = True  # only tests switch this off, to prove the second check holds
    # Resolves each query's generation (explicit, canary, tenant promotion, live alias); None: `store` only.
    router: GenerationRouter | None = None

    def route(self, ev: QueryRequested) -> Route:
        q = ev.query
        if self.router is not None:
            return self.router.resolve(ev.tenant_id, q.caller.subject, q.generation)
        if q.generation and q.generation != self.generation:
            raise ValueError(f"unknown index generation {q.generation!r}")
        return Route(self.store, self.generation, "static")

    def query_embedder(self, route: Route) -> Embedder | None:
        """The embedder whose vectors match the route's generation (its record's model and revision):
        query and document vectors of one generation always come from compatible backends. None when
        no backend here matches (another model): that query is served by BM25 alone, and counted."""
        want = self.router.embedding_of(route.generation) if self.router is not None else None
        if want is None:
            return self.embedder
        found = embedder_for_generation(self.embedder, *want)
        if found is None:
            metrics.EMBED_INCOMPATIBLE.labels("no_matching_backend").inc()
        return found

    def _states(
        self, tenant: str, route: Route, hits: list[SearchHit]
    ) -> dict[tuple[str, str], DocumentState]:
        """Document states of the generation each hit came from (an alias may have just switched)."""
        by_gen: dict[str, list[str]] = {}
        for h in hits:
            by_gen.setdefault(h.properties.get("generation") or route.generation, []).append(
                h.properties["document_id"]
            )
        out: dict[tuple[str, str], DocumentState] = {}
        for gen, docs in by_gen.items():
            store = (
                route.store
                if self.router is None or (gen == route.generation and route.reason != "live")
                else self.router.store(gen)
            )
            out.update({(gen, d): st for d, st in store.get_states(tenant, docs).items()})
        return out

    def _fused(
        self,
        store: ChunkStore,
        tenant: str,
        text: str,
        vector: list[float],
        acl: AccessFilter | None,
        filters: dict[str, str],
        limit: int,
    ) -> tuple[list[SearchHit], set[str]]:
        """The fusion first stage: BM25, dense, and dense after Rocchio feedback, z-fused per document
        (ragstream.core.fuse), each chunk scored as its document; also the chunk ids BM25 matched.
        Three searches, each with the ACL filter inside."""
        depth = max(limit, self.cfg.fusion_depth)
        bm_hits = store.search(tenant, text, vector, limit=depth, acl=acl, filters=filters, mode="bm25")
        dn_hits = store.search(
            tenant, "", vector, limit=depth, acl=acl, filters=filters, mode="dense", with_vectors=True
        )
        bm25 = doc_scores((h.properties["document_id"], h.score) for h in bm_hits)
        dense = doc_scores((h.properties["document_id"], h.score) for h in dn_hits)
        best: dict[str, tuple[float, ...]] = {}
        for h in dn_hits:  # best first: the first vector seen per document is its best chunk's
            if h.vector is not None:
                best.setdefault(h.properties["document_id"], h.vector)
        fb = [best[d] for d in feedback_docs(bm25, dense, self.cfg.feedback_docs) if d in best]
        q = np.asarray(vector, dtype=np.float32)
        moved = rocchio(q, np.asarray(fb, dtype=np.float32), self.cfg.feedback_beta) if fb else q
        prf_hits = store.search(
            tenant, "", moved.tolist(), limit=depth, acl=acl, filters=filters, mode="dense"
        )
        prf = doc_scores((h.properties["document_id"], h.score) for h in prf_hits)
        fused = first_stage(bm25, dense, prf)
        chunks: dict[str, SearchHit] = {}
        for h in (*dn_hits, *prf_hits, *bm_hits):
            chunks.setdefault(h.chunk_id, h)
        cos = {h.chunk_id: h.relevance if h.relevance is not None else h.score for h in dn_hits}

        def key(h: SearchHit) -> tuple[float, float, str]:
            return (-fused[h.properties["document_id"]], -cos.get(h.chunk_id, -1.0), h.chunk_id)

        ordered = sorted(chunks.values(), key=key)[:limit]
        out = [
            h.model_copy(
                update={
                    "score": fused[h.properties["document_id"]],
                    "relevance": cos.get(h.chunk_id, h.relevance),
                    "vector": None,
                }
            )
            for h in ordered
        ]
        return out, {h.chunk_id for h in bm_hits}

    def retrieve(self, ev: QueryRequested) -> QueryRetrieved:
        q = ev.query
        if q.top_k < 1:
            # The caller's mistake (the gateway never sends one; another producer may): answered as a bad
            # request, where Weaviate's refusal of the negative limit was a dead letter (bench.fuzz).
            raise ValueError(f"top_k {q.top_k} is not positive")
        t0 = time.perf_counter()
        text = with_history(q.question, q.history, self.cfg.max_question_chars)
        passages: list[Passage] = []
        timings: dict[str, float] = {}
        route = self.route(ev)
        served = route.generation
        if text and route.store.has_tenant(ev.tenant_id):
            embedder = self.query_embedder(route) if q.mode != "bm25" else None
            vector = embedder.embed([text])[0] if embedder is not None else None
            mode = q.mode if vector is not None else "bm25"
            timings["embed"] = (time.perf_counter() - t0) * 1000
            principals, groups = caller_terms(q.caller)
            limit = max(q.top_k, self.cfg.candidate_k)
            acl = AccessFilter(tuple(principals), tuple(groups)) if self.acl_in_search else None
            lexical: set[str] = set()
            if self.cfg.first_stage == "fusion" and vector is not None and mode == "hybrid":
                hits, lexical = self._fused(route.store, ev.tenant_id, text, vector, acl, q.filters, limit)
            else:
                hits = route.store.search(
                    ev.tenant_id,
                    text,
                    vector,
                    limit=limit,
                    acl=acl,
                    filters=q.filters,
                    mode=mode,
                    alpha=self.cfg.hybrid_alpha,
                    fusion=self.cfg.fusion,
                )
            timings["search"] = (time.perf_counter() - t0) * 1000 - timings["embed"]
            if hits:
                served = hits[0].properties.get("generation") or served
            states = self._states(ev.tenant_id, route, hits)
            for h in hits:
                p = h.properties
                state = states.get((p.get("generation") or route.generation, p["document_id"]))
                if state is None or state.live_version != p.get("source_version"):
                    continue  # a version being replaced or removed: readers see only the live one
                # Dropped only when neither the embedding nor the words support it: a chunk with a BM25
                # match survives a low cosine (short keyword queries embed far from any passage).
                low = h.relevance is not None and h.relevance < self.cfg.min_relevance
                if low and h.chunk_id not in lexical and not _word_match(q.mode, text, p):
                    continue
                passages.append(
                    Passage(
                        chunk_id=h.chunk_id,
                        document_id=p["document_id"],
                        text=p.get("text", ""),
                        title=p.get("title", ""),
                        source_id=p.get("source_id", ""),
                        source_version=p.get("source_version", ""),
                        heading_path=tuple(x for x in (p.get("heading") or "").split(" > ") if x),
                        acl_principals=tuple(p.get("acl_principals") or ()),
                        acl_groups=tuple(p.get("acl_groups") or ()),
                        generation=p.get("generation") or route.generation,
                        score=h.score,
                        relevance=h.relevance,
                        retrieval_rank=len(passages) + 1,
                    )
                )
        cls = q.request_class
        TOP_K.labels(cls).observe(q.top_k)
        RESULTS.labels(cls).observe(len(passages))
        if passages:
            TOP_SCORE.labels(cls).observe(passages[0].score)
        else:
            EMPTY.labels(cls).inc()
        timings["retrieval"] = (time.perf_counter() - t0) * 1000
        observe_retrieval(served, route.reason, timings["retrieval"] / 1000, len(passages))
        return QueryRetrieved(
            **ev.caused(producer="retrieval"),
            query=q,
            rewritten=text,
            passages=tuple(passages),
            generation=served,
            timings_ms=timings,
        )


def _word_match(mode: str, query: str, props: dict[str, Any]) -> bool:
    # Hybrid and BM25 hits may be there for their words alone; dense-only hits are judged by cosine.
    return mode != "dense" and shares_terms(query, f"{props.get('title', '')} {props.get('text', '')}")


def component(deps: Deps) -> Retriever:
    return Retriever(
        required(deps.store, "store"),
        required(deps.embedder, "embedder"),
        deps.settings.serving,
        deps.settings.index.generation,
        acl_in_search=deps.acl_in_search,
        router=deps.router,
    )


def build_handler(deps: Deps) -> Handler:
    return handler_for(component(deps))


def handler_for(retriever: Retriever) -> Handler:
    out_topic = SPEC.output
    assert out_topic is not None

    async def handle(items: list[Inbound]) -> list[Outbound]:
        outputs: list[Outbound] = []
        for item in items:
            with within(item.context):
                outputs.extend(await one(item.event))
        return outputs

    async def one(ev: QueryRequested) -> list[Outbound]:
        key = ev.query.query_id.encode()
        if utcnow() > ev.query.deadline_at:
            failed = QueryFailed(
                **ev.caused(producer="retrieval"),
                query_id=ev.query.query_id,
                subject=ev.query.caller.subject,
                stage="retrieval",
                reason="deadline exceeded",
                code="deadline_exceeded",
            )
            return [Outbound(ANSWERS.name, key, failed)]
        try:
            out = await asyncio.to_thread(retriever.retrieve, ev)
        except ValueError as exc:  # a bad filter: the caller's mistake, answered, not retried
            failed = QueryFailed(
                **ev.caused(producer="retrieval"),
                query_id=ev.query.query_id,
                subject=ev.query.caller.subject,
                stage="retrieval",
                reason=str(exc)[:500],
                code="bad_request",
            )
            return [Outbound(ANSWERS.name, key, failed)]
        except ADAPTER_ERRORS as exc:  # permanent (4xx) -> dead letter now; transient -> retried
            raise translate(exc, "weaviate") from exc
        _annotate(out)
        return [Outbound(out_topic, key, out)]

    return handle


def _annotate(out: QueryRetrieved) -> None:
    """Retrieval span attributes: what was asked and how it scored, never the passages' text."""
    q = out.query
    span = trace.get_current_span()
    span.set_attributes(
        {
            "retrieval.top_k": q.top_k,
            "retrieval.mode": q.mode,
            "retrieval.request_class": q.request_class,
            "retrieval.filters": sorted(q.filters),
            "retrieval.result_count": len(out.passages),
            "retrieval.generation": out.generation,
        }
    )
    for name, value in score_summary([p.score for p in out.passages]).items():
        span.set_attribute(f"retrieval.score.{name}", value)
