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
from pathlib import Path
from typing import Any

import numpy as np

from evals.asking import Launcher, need_launcher
from evals.beir import BeirDataset, load_beir
from evals.fusion import Scores, convex, doc_scores, pool_bm25, ranked, rocchio, zfuse
from evals.metrics import summarize
from ragstream.adapters.store import open_store
from ragstream.ports import AccessFilter, ChunkStore, SearchHit
from ragstream.settings import Settings
from schemas.topics import INGESTION

MODES = ("bm25", "dense", "hybrid", "rerank")
CANDIDATE_CHUNKS = 300  # chunks fetched per query and mode: enough distinct documents for recall@100
FEEDBACK_DOCS = 3  # pseudo-relevance feedback: top documents whose vectors move the query
FEEDBACK_BETA = 0.5
RERANK_DEPTH = 100
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

    def to_json(self) -> dict[str, Any]:
        return {
            "ndcg_at_10": round(self.ndcg_at_10, 4),
            "recall_at_100": round(self.recall_at_100, 4),
            "mrr_at_10": round(self.mrr_at_10, 4),
            "empty_result_rate": round(self.empty_result_rate, 4),
            "queries": self.queries,
            "seconds": round(self.seconds, 1),
            "method": self.detail,
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


class Searcher:
    """The retrieval worker's search (`ChunkStore.search`, ACL filter inside) per mode."""

    def __init__(self, store: Any, tenant: str, settings: Settings) -> None:
        self.store = store
        self.tenant = tenant
        self.cfg = settings.serving
        self.acl = AccessFilter((EVAL_SUBJECT,), (EVAL_GROUP,))

    def hits(
        self, text: str, vector: np.ndarray | None, mode: str, limit: int = CANDIDATE_CHUNKS
    ) -> list[Any]:
        return self.store.search(
            self.tenant,
            text,
            vector.tolist() if vector is not None else None,
            limit=limit,
            acl=self.acl,
            mode=mode,
            alpha=self.cfg.hybrid_alpha,
            fusion=self.cfg.fusion,
        )

    def doc_ranking(self, text: str, vector: np.ndarray | None, mode: str) -> tuple[Scores, list[Any]]:
        hs = self.hits(text, vector if mode != "bm25" else None, mode)
        # `search` reports Weaviate's score, which near_vector leaves at 0: dense hits rank by cosine.
        return doc_scores((h.properties["document_id"], _rank_score(h, mode)) for h in hs), hs


def _rank_score(hit: Any, mode: str) -> float:
    if mode == "dense" and hit.relevance is not None:
        return float(hit.relevance)
    return float(hit.score)


def _doc_vectors(hits: Sequence[SearchHit], docs: Sequence[str]) -> np.ndarray:
    """For each document, the vector of its best-scoring chunk among the hits (hits come best first)."""
    best: dict[str, tuple[float, ...]] = {}
    for h in hits:
        d = h.properties["document_id"]
        if d not in best and h.vector is not None:
            best[d] = h.vector
    rows = [best[d] for d in docs if d in best]
    return np.asarray(rows, dtype=np.float32) if rows else np.zeros((0, 0), dtype=np.float32)


def _dense_with_vectors(searcher: Searcher, vector: np.ndarray, limit: int) -> list[SearchHit]:
    """Dense hits (score = cosine) with their chunk vectors, for the feedback round."""
    return searcher.store.search(
        searcher.tenant,
        "",
        vector.tolist(),
        limit=limit,
        acl=searcher.acl,
        mode="dense",
        with_vectors=True,
    )


def _pool_texts(searcher: Searcher, docs: Sequence[str]) -> dict[str, str]:
    """Whole-document text (title + every chunk in position order) for the candidate documents: the
    chunks their states name (live versions only, as retrieval serves them) that the eval caller may read,
    in two reads of the index."""
    if not docs:
        return {}
    states = searcher.store.get_states(searcher.tenant, list(docs))
    live = [cid for st in states.values() for cid in st.chunk_ids]
    parts: dict[str, list[tuple[int, str]]] = {}
    titles: dict[str, str] = {}
    for p in searcher.store.get_chunks(searcher.tenant, live).values():
        if not searcher.acl.admits(p.get("acl_principals") or (), p.get("acl_groups") or ()):
            continue
        d = p["document_id"]
        parts.setdefault(d, []).append((int(p.get("position") or 0), p.get("text", "")))
        titles[d] = p.get("title") or ""
    return {d: titles[d] + "\n" + "\n".join(t for _, t in sorted(ps)) for d, ps in parts.items()}


def rerank_scores(
    searcher: Searcher,
    text: str,
    vector: np.ndarray,
    bm25: Scores,
    reranker: Any | None,
) -> tuple[Scores, str]:
    """The second stage over the first stage's document candidates.

    First stage: z-score fusion of BM25 (best chunk), dense (best chunk) and dense after one round of
    Rocchio feedback from the top documents of BM25+dense. Second stage, over its top RERANK_DEPTH
    documents: BM25 is recomputed on whole documents with stemming (`pool_bm25`) and fused again with
    the two dense signals; with a cross-encoder configured, it scores the fused top documents instead.
    """
    dense_hits = _dense_with_vectors(searcher, vector, CANDIDATE_CHUNKS)
    dense = doc_scores((h.properties["document_id"], h.score) for h in dense_hits)
    seed = convex(dense, bm25, 0.5, "zscore")
    fb = _doc_vectors(dense_hits, ranked(seed)[:FEEDBACK_DOCS])
    prf_hits = _dense_with_vectors(searcher, rocchio(vector, fb, FEEDBACK_BETA), CANDIDATE_CHUNKS)
    prf = doc_scores((h.properties["document_id"], h.score) for h in prf_hits)
    first = zfuse([dense, prf, bm25])
    pool = ranked(first)[:RERANK_DEPTH]
    texts = _pool_texts(searcher, pool)
    pool = [d for d in pool if d in texts]
    if reranker is not None:
        scores = reranker.score(text, [texts[d] for d in pool])
        out = {d: 1000.0 + float(sc) for d, sc in zip(pool, scores, strict=True)}
        method = f"{reranker.name} over the top {RERANK_DEPTH} of z(dense, dense+prf, bm25)"
    else:
        out = zfuse([dense, prf, pool_bm25(text, texts)], pool)
        out = {d: 1000.0 + sc for d, sc in out.items()}
        method = (
            f"z(dense, dense+rocchio(top{FEEDBACK_DOCS}), stemmed doc-BM25) over the top {RERANK_DEPTH} "
            "of z(dense, dense+rocchio, bm25)"
        )
    for d, sc in first.items():
        out.setdefault(d, sc)
    return out, method


async def evaluate_beir(
    settings: Settings,
    directory: Path,
    modes: Sequence[str] = MODES,
    *,
    progress: Progress | None = None,
    limit_queries: int | None = None,
    launch: Launcher | None = None,
) -> BeirReport:
    """Ingest (or reuse) the corpus, run every judged test query per mode, summarize."""
    from ragstream.adapters.embedder import SentenceTransformerEmbedder
    from ragstream.core.rewrite import normalize_query

    ds = await asyncio.to_thread(load_beir, directory)
    tenant = corpus_tenant(ds, settings)
    client, store = await asyncio.to_thread(open_store, settings)
    try:
        ingest = await ensure_indexed(settings, ds, tenant, store, progress=progress, launch=launch)
        qids = sorted(ds.queries)[:limit_queries] if limit_queries else sorted(ds.queries)
        texts = [normalize_query(ds.queries[q], settings.serving.max_question_chars) for q in qids]
        embedder = await asyncio.to_thread(SentenceTransformerEmbedder, settings.embedding)
        vecs = await asyncio.to_thread(embedder.embed, texts)
        searcher = Searcher(store, tenant, settings)
        reranker = None
        if "rerank" in modes and settings.serving.rerank not in ("", "none"):
            from ragstream.adapters.reranker import from_spec

            reranker = from_spec(settings.serving.rerank)
        qrels = {q: ds.qrels[q] for q in qids}
        results: dict[str, ModeResult] = {}
        bm25_cache: dict[str, Scores] = {}
        for mode in modes:
            t0 = time.monotonic()
            run: dict[str, list[str]] = {}
            detail = mode
            for i, (qid, text) in enumerate(zip(qids, texts, strict=True)):
                vec = np.asarray(vecs[i], dtype=np.float32)
                if mode == "rerank":
                    if qid not in bm25_cache:
                        bm25_cache[qid] = (await asyncio.to_thread(searcher.doc_ranking, text, None, "bm25"))[
                            0
                        ]
                    scores, detail = await asyncio.to_thread(
                        rerank_scores, searcher, text, vec, bm25_cache[qid], reranker
                    )
                else:
                    scores, _ = await asyncio.to_thread(searcher.doc_ranking, text, vec, mode)
                    if mode == "bm25":
                        bm25_cache[qid] = scores
                    if mode == "hybrid":
                        detail = f"hybrid {settings.serving.fusion}, alpha {settings.serving.hybrid_alpha}"
                run[qid] = ranked(scores)[:100]
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
                detail,
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
