"""`ragstream eval beir DIR`: a BEIR corpus through the ingestion pipeline, its test queries through the
store search the retrieval worker uses, nDCG@10 / recall@100 / MRR@10 per mode.

Ingestion: every corpus document is published as a DocumentChanged event (title + text) and indexed by
the normalizer, chunker and embedder consumers (started in this process) into a tenant of its own whose
name is a fingerprint of the corpus files, the index generation, the chunking policy and the embedding
model: a second run finds the tenant complete (one state object per document) and skips ingestion; an
interrupted one publishes only what is missing.

Modes (all over the same chunks, ranked by document: a document scores as its best chunk):
  bm25    Weaviate BM25 over title, heading and text
  dense   nearest chunk vectors (the embedding model of the pipeline)
  hybrid  the retrieval worker's hybrid search as configured (alpha, fusion)
  rerank  two stages, general methods only (no constant fitted to a dataset): the first fuses (z-scores)
          BM25, dense, and dense after Rocchio pseudo-relevance feedback; the second recomputes BM25 on
          whole candidate documents with stemming (first-stage BM25 is per chunk and unstemmed) and fuses
          it with both dense signals. With a cross-encoder configured (`serving.rerank`) the second stage
          is the cross-encoder.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from evals.asking import Launcher, need_launcher
from evals.beir import BeirDataset, load_beir
from evals.metrics import summarize
from ragstream.adapters.store import open_store
from ragstream.ports import ChunkStore
from ragstream.settings import Settings
from schemas.envelope import utcnow
from schemas.serving import Caller, Passage, QueryRequested, QuerySpec
from schemas.topics import INGESTION

MODES = ("bm25", "dense", "hybrid", "hybrid+lexical", "fusion", "rerank", "served")
EVAL_TOP_K = 100  # passages asked for per query (the caller's top_k): the depth recall@100 sees
EVAL_GROUP = "everyone"
EVAL_SUBJECT = "beir-eval"

INGEST_TOPIC_PREFIX = "evals-beir."
INGEST_GROUP_SUFFIX = ".evals-beir"

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def ingest_settings(settings: Settings) -> Settings:
    """The same services and collections under the benchmark's own topic prefix."""
    kafka = settings.kafka.model_copy(
        update={"topic_prefix": settings.kafka.topic_prefix + INGEST_TOPIC_PREFIX}
    )
    return settings.model_copy(update={"kafka": kafka})


@dataclass
class ModeResult:
    mode: str
    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    empty_result_rate: float
    queries: int
    seconds: float
    detail: str = ""
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    fallbacks: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ndcg_at_10": round(self.ndcg_at_10, 4),
            "recall_at_100": round(self.recall_at_100, 4),
            "mrr_at_10": round(self.mrr_at_10, 4),
            "empty_result_rate": round(self.empty_result_rate, 4),
            "queries": self.queries,
            "seconds": round(self.seconds, 1),
            "method": self.detail,
            "latency_ms": self.latency_ms,
            "rerank_fallbacks": self.fallbacks,
        }


@dataclass
class BeirReport:
    dataset: str
    tenant: str
    generation: str
    ingest: dict[str, Any]
    modes: dict[str, ModeResult]
    published: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {m: r.to_json() for m, r in self.modes.items()}


def _policy(settings: Settings) -> Any:
    from ragstream.core.chunk import ChunkingPolicy

    return ChunkingPolicy(
        max_tokens=settings.ingest.chunk_max_tokens, overlap_tokens=settings.ingest.chunk_overlap_tokens
    )


def corpus_tenant(ds: BeirDataset, settings: Settings) -> str:
    """Tenant name = fingerprint(corpus files, generation, chunking policy, embedding model)."""
    from ragstream.core.normalize import NORMALIZER_VERSION

    key = "|".join(
        (
            ds.fingerprint,
            settings.index.generation,
            _policy(settings).policy_hash,
            settings.embedding.model_id,
            settings.embedding.revision,
            str(NORMALIZER_VERSION),
        )
    )
    name = re.sub(r"[^a-z0-9]+", "", ds.name.lower())[:20] or "beir"
    return f"beir-{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def indexed_documents(store: ChunkStore, tenant: str) -> set[str]:
    """Document ids with a state object in the tenant (the completeness marker)."""
    return {st.document_id for st in store.list_states(tenant, limit=None)}


async def ensure_indexed(
    settings: Settings,
    ds: BeirDataset,
    tenant: str,
    store: Any,
    *,
    progress: Progress | None = None,
    timeout_s: float = 7200.0,
    launch: Launcher | None = None,
) -> dict[str, Any]:
    """Publish the documents the tenant lacks through the ingestion pipeline and wait for every receipt."""
    from producers.publisher import DocumentPublisher
    from producers.receipts import ReceiptWatcher
    from ragstream.runtime.kafka_admin import ensure_topics
    from schemas.ingestion import Acl

    t0 = time.monotonic()
    store.ensure_schema()
    have = await asyncio.to_thread(indexed_documents, store, tenant)
    missing = [d for d in ds.corpus.values() if d.doc_id not in have]
    if not missing:
        return {"reused": True, "documents": len(have), "published": 0, "seconds": 0.0}
    # Own topics and consumer groups: a benchmark load neither waits behind nor rebalances live ingestion
    # (same Weaviate collections, so the search below is the serving path's).
    s = ingest_settings(settings)
    await ensure_topics(s.kafka)
    acl = Acl(groups=(EVAL_GROUP,))
    pipeline = need_launcher(launch)(s, INGESTION, None, INGEST_GROUP_SUFFIX)
    await pipeline.__aenter__()
    watcher = ReceiptWatcher(s)
    await watcher.start()
    sent: dict[str, float] = {}
    done = 0
    try:
        async with DocumentPublisher(s, "ragstream.evals.beir") as pub:
            for start in range(0, len(missing), 200):
                batch = missing[start : start + 200]
                events = await asyncio.gather(
                    *(
                        pub.upsert(
                            tenant,
                            d.doc_id,
                            content=d.text.encode(),
                            mime_type="text/plain",
                            title=d.title,
                            acl=acl,
                        )
                        for d in batch
                    )
                )
                now = time.monotonic()
                sent.update({e.correlation_id: now for e in events})
                if progress:
                    progress("publish", len(sent), len(missing))

        def tick(_r: object, _dt: float) -> None:
            nonlocal done
            done += 1
            if progress and (done % 50 == 0 or done == len(sent)):
                progress("index", done, len(sent))

        got = await watcher.wait_for(sent, timeout_s, tick)
    finally:
        await watcher.stop()
        await pipeline.__aexit__(None, None, None)
    if len(got) < len(sent):
        raise TimeoutError(f"{len(got)} of {len(sent)} documents indexed within {timeout_s:.0f}s")
    return {
        "reused": False,
        "documents": len(have) + len(got),
        "published": len(sent),
        "seconds": round(time.monotonic() - t0, 1),
    }


@dataclass(frozen=True)
class Config:
    """One serving configuration: the query's search mode, the retriever's first stage, the reranker."""

    query_mode: str
    first_stage: str
    rerank: str

    def describe(self) -> str:
        head = self.query_mode if self.query_mode != "hybrid" else self.first_stage
        return head + ("" if self.rerank == "none" else f" + {self.rerank}")


def mode_config(mode: str, settings: Settings) -> Config:
    """Each mode is a serving configuration; `served` is the one the settings serve."""
    cfg = settings.serving
    custom = cfg.rerank if cfg.rerank not in ("", "none", "lexical") else "lexical"
    return {
        "bm25": Config("bm25", "hybrid", "none"),
        "dense": Config("dense", "hybrid", "none"),
        "hybrid": Config("hybrid", "hybrid", "none"),
        "hybrid+lexical": Config("hybrid", "hybrid", "lexical"),
        "fusion": Config("hybrid", "fusion", "none"),
        "rerank": Config("hybrid", "fusion", custom),
        "served": Config("hybrid", cfg.first_stage, cfg.rerank or "none"),
    }[mode]


def document_ranking(passages: Sequence[Passage]) -> list[str]:
    """Chunks -> documents as the answer's citations name them: each document at its first passage."""
    return list(dict.fromkeys(p.document_id for p in passages))


class ServedPath:
    """The retrieval and rerank consumers' components (`Retriever`, `RerankStage`), called with the
    events the gateway would publish; what they return is what a caller gets."""

    def __init__(self, store: Any, embedder: Any, settings: Settings, config: Config, reranker: Any) -> None:
        from consumers.serving.rerank import RerankStage
        from consumers.serving.retrieval import Retriever

        serving = settings.serving.model_copy(update={"first_stage": config.first_stage})
        self.config = config
        self.settings = settings
        self.retriever = Retriever(store, embedder, serving, settings.index.generation)
        self.stage = RerankStage(reranker, serving)

    def event(self, tenant: str, qid: str, text: str, request_class: str, top_k: int) -> QueryRequested:
        cfg = self.settings.serving
        deadline = cfg.interactive_deadline_s if request_class == "interactive" else cfg.batch_deadline_s
        spec = QuerySpec(
            query_id=f"beir-{qid}",
            question=text,
            caller=Caller(subject=EVAL_SUBJECT, groups=(EVAL_GROUP,), auth_method="internal"),
            request_class=request_class,  # type: ignore[arg-type]
            top_k=top_k,
            deadline_at=utcnow() + timedelta(seconds=deadline),
            mode=self.config.query_mode,  # type: ignore[arg-type]
        )
        return QueryRequested(tenant_id=tenant, producer="evals.beir", query=spec)

    def ask(self, ev: QueryRequested) -> tuple[list[Passage], dict[str, float], str | None]:
        """(passages a caller gets, retrieval and rerank milliseconds, the rerank fallback reason)."""
        got = self.retriever.retrieve(ev)
        out = self.stage.rerank(got)
        ms = {"retrieval": got.timings_ms.get("retrieval", 0.0), "rerank": out.timings_ms.get("rerank", 0.0)}
        return list(out.passages), ms, out.fallback_reason


async def evaluate_beir(
    settings: Settings,
    directory: Path,
    modes: Sequence[str] = MODES,
    *,
    progress: Progress | None = None,
    limit_queries: int | None = None,
    launch: Launcher | None = None,
    request_class: str = "batch",
    top_k: int = EVAL_TOP_K,
) -> BeirReport:
    """Ingest (or reuse) the corpus, ask every judged test query per mode through the served path."""
    from ragstream.adapters.embedder import SentenceTransformerEmbedder
    from ragstream.adapters.reranker import from_spec

    ds = await asyncio.to_thread(load_beir, directory)
    tenant = corpus_tenant(ds, settings)
    client, store = await asyncio.to_thread(open_store, settings)
    try:
        ingest = await ensure_indexed(settings, ds, tenant, store, progress=progress, launch=launch)
        qids = sorted(ds.queries)[:limit_queries] if limit_queries else sorted(ds.queries)
        embedder = await asyncio.to_thread(SentenceTransformerEmbedder, settings.embedding)
        qrels = {q: ds.qrels[q] for q in qids}
        rerankers: dict[str, Any] = {}
        results: dict[str, ModeResult] = {}
        for mode in modes:
            config = mode_config(mode, settings)
            if config.rerank not in rerankers:
                rerankers[config.rerank] = await asyncio.to_thread(from_spec, config.rerank)
            path = ServedPath(store, embedder, settings, config, rerankers[config.rerank])
            t0 = time.monotonic()
            run: dict[str, list[str]] = {}
            lat: dict[str, list[float]] = {"retrieval": [], "rerank": []}
            fallbacks = 0
            for i, qid in enumerate(qids):
                ev = path.event(tenant, qid, ds.queries[qid], request_class, top_k)
                passages, ms, reason = await asyncio.to_thread(path.ask, ev)
                run[qid] = document_ranking(passages)[:100]
                for k, v in ms.items():
                    lat[k].append(v)
                fallbacks += reason is not None
                if progress and (i + 1) % 25 == 0:
                    progress(mode, i + 1, len(qids))
            s = summarize(run, qrels)
            results[mode] = ModeResult(
                mode,
                s["ndcg_at_10"],
                s["recall_at_100"],
                s["mrr_at_10"],
                s["empty_result_rate"],
                int(s["queries"]),
                time.monotonic() - t0,
                f"{config.describe()} ({request_class}, top_k {top_k})",
                latency_ms={k: _percentiles(v) for k, v in lat.items()},
                fallbacks=fallbacks,
            )
    finally:
        client.close()
    return BeirReport(
        dataset=ds.name,
        tenant=tenant,
        generation=settings.index.generation,
        ingest=ingest,
        modes=results,
        published=published_figures(Path(directory)),
    )


def _percentiles(xs: Sequence[float]) -> dict[str, float]:
    from ragstream.core.stats import percentile

    if not xs:
        return {}
    return {"p50": round(percentile(xs, 50), 1), "p95": round(percentile(xs, 95), 1)}


def published_figures(directory: Path) -> list[dict[str, str]]:
    """Rows of the published-figures table for this dataset in the datasets README (DIR or its parent),
    under the heading that names the directory; [] when there is none."""
    for readme in (directory / "README.md", directory.parent / "README.md"):
        if not readme.is_file():
            continue
        lines = readme.read_text(encoding="utf-8").splitlines()
        name = directory.name.lower()
        inside = False
        header: list[str] | None = None
        rows: list[dict[str, str]] = []
        for line in lines:
            if line.startswith("## "):
                if inside and rows:
                    break
                inside = line[3:].strip().lower().startswith(name)
                header = None
                continue
            if not inside or not line.startswith("|"):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not all(set(c) <= set("-: ") for c in cells):
                rows.append(dict(zip(header, cells, strict=False)))
        if rows:
            return rows
    return []
