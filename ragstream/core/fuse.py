"""The retrieval core, pure functions over candidates and their texts (no I/O): chunk hits -> document
scores, normalization, fusion (z-score, convex, reciprocal rank), Rocchio pseudo-relevance feedback, and
the lexical second stage (stemmed BM25 over whole candidate documents fused with the first stage).
General methods: no constant depends on a corpus. The retrieval and rerank consumers serve them and
`eval beir` measures them through those consumers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ragstream.core.groundedness import _STOP as STOPWORDS  # one English stopword list for the project
from ragstream.core.groundedness import stem

Scores = dict[str, float]


def doc_scores(hits: Iterable[tuple[str, float]], how: str = "max") -> Scores:
    """Chunk hits (document id, score) -> one score per document.

    `max`: the best chunk; `max+` adds a tenth of the second-best chunk (a document matching in two
    places ranks above one that matches once, ties broken by evidence, not by chunk count)."""
    per: dict[str, list[float]] = {}
    for doc, score in hits:
        per.setdefault(doc, []).append(float(score))
    out: Scores = {}
    for doc, xs in per.items():
        xs.sort(reverse=True)
        out[doc] = xs[0] + (0.1 * xs[1] if how == "max+" and len(xs) > 1 else 0.0)
    return out


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Document ids by descending score (ties by id, so runs are deterministic)."""
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def minmax(scores: Mapping[str, float]) -> Scores:
    """Scale to [0, 1] over the candidate set (Weaviate's relativeScore normalization)."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi - lo <= 1e-12:
        return dict.fromkeys(scores, 1.0)
    return {d: (s - lo) / (hi - lo) for d, s in scores.items()}


def zscore(scores: Mapping[str, float]) -> Scores:
    """Standardize over the candidate set (robust to one outlier score stretching min-max)."""
    if not scores:
        return {}
    xs = np.fromiter(scores.values(), dtype=np.float64)
    mu, sd = float(xs.mean()), float(xs.std())
    if sd <= 1e-12:
        return dict.fromkeys(scores, 0.0)
    return {d: (s - mu) / sd for d, s in scores.items()}


def convex(a: Mapping[str, float], b: Mapping[str, float], alpha: float, norm: str = "minmax") -> Scores:
    """alpha * norm(a) + (1 - alpha) * norm(b); a document missing from one list gets that list's minimum."""
    f = minmax if norm == "minmax" else zscore
    na, nb = f(a), f(b)
    floor_a = min(na.values(), default=0.0)
    floor_b = min(nb.values(), default=0.0)
    return {d: alpha * na.get(d, floor_a) + (1 - alpha) * nb.get(d, floor_b) for d in set(na) | set(nb)}


def rrf(rankings: Sequence[Sequence[str]], k: int = 60, weights: Sequence[float] | None = None) -> Scores:
    """Reciprocal rank fusion (Cormack et al. 2009): sum of w / (k + rank)."""
    w = weights or [1.0] * len(rankings)
    out: Scores = {}
    for weight, ranking in zip(w, rankings, strict=True):
        for rank, d in enumerate(ranking, start=1):
            out[d] = out.get(d, 0.0) + weight / (k + rank)
    return out


def rocchio(query: np.ndarray, feedback: np.ndarray, beta: float = 0.5) -> np.ndarray:
    """Dense pseudo-relevance feedback: the query moved toward the mean of the top documents' vectors,
    re-normalized (unit vectors in, unit vector out)."""
    if feedback.size == 0:
        return query
    centroid = feedback.mean(axis=0)
    v = query + beta * centroid
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else query


# ----------------------------------------------------------------------- lexical second stage
_TOKEN = re.compile(r"[a-z0-9]+")


def stemmed_terms(text: str) -> list[str]:
    """Lower-cased word tokens without stopwords, light-stemmed (the groundedness scorer's stemmer):
    'reduces', 'reduced', 'reducing' meet, which Weaviate's word tokenization does not do."""
    return [stem(w) for w in _TOKEN.findall(text.lower()) if w not in STOPWORDS]


def shares_terms(query: str, text: str) -> bool:
    """Whether a passage holds any of the query's stemmed content words: the evidence BM25 would have
    had for it. A short keyword query embeds far from every passage, so a low cosine alone must not
    drop a passage that matches its words."""
    q = set(stemmed_terms(query))
    return bool(q) and not q.isdisjoint(stemmed_terms(text))


def pool_bm25(query: str, docs: Mapping[str, str], k1: float = 1.2, b: float = 0.75) -> Scores:
    """BM25 over whole documents (all their chunks joined), stemmed, with document frequencies taken from
    the candidate pool itself: no corpus statistics needed at query time. It restores what chunk-level,
    unstemmed first-stage BM25 loses (term evidence split across chunks, inflected forms)."""
    if not docs:
        return {}
    terms = {d: stemmed_terms(t) for d, t in docs.items()}
    q = set(stemmed_terms(query))
    n = len(terms)
    avg = sum(len(t) for t in terms.values()) / n or 1.0
    df: dict[str, int] = {}
    for ts in terms.values():
        for w in set(ts) & q:
            df[w] = df.get(w, 0) + 1
    idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}
    out: Scores = {}
    for d, ts in terms.items():
        tf: dict[str, int] = {}
        for w in ts:
            if w in q:
                tf[w] = tf.get(w, 0) + 1
        norm = k1 * (1 - b + b * len(ts) / avg)
        out[d] = sum(idf[w] * f * (k1 + 1) / (f + norm) for w, f in tf.items())
    return out


def zfuse(signals: Sequence[Mapping[str, float]], docs: Sequence[str] | None = None) -> Scores:
    """Mean of z-scored signals over `docs` (default: every document any signal scored); a document a
    signal did not score gets that signal's minimum."""
    pool = list(docs) if docs is not None else sorted({d for s in signals for d in s})
    if not pool:
        return {}
    zs = []
    for s in signals:
        floor = min(s.values(), default=0.0)
        zs.append(zscore({d: s.get(d, floor) for d in pool}))
    return {d: sum(z[d] for z in zs) / len(zs) for d in pool}


# ----------------------------------------------------------------------- served two-stage helpers
@dataclass(frozen=True)
class Candidate:
    """One chunk candidate of the second stage: its document, text, first-stage score and cosine."""

    doc_id: str
    text: str
    prior: float
    relevance: float | None = None
    title: str = ""


def first_stage(bm25: Mapping[str, float], dense: Mapping[str, float], prf: Mapping[str, float]) -> Scores:
    """z-fusion of BM25, dense and dense-after-feedback document scores (any of them may be empty)."""
    return zfuse([s for s in (dense, prf, bm25) if s])


def feedback_docs(bm25: Mapping[str, float], dense: Mapping[str, float], n: int) -> list[str]:
    """The documents whose vectors move the query: the top `n` of z-fused BM25 and dense."""
    if not bm25:
        return ranked(dense)[:n]
    return ranked(convex(dense, bm25, 0.5, "zscore"))[:n]


def document_texts(candidates: Sequence[Candidate]) -> dict[str, str]:
    """Whole-document text per candidate document: its title once, then its candidate chunks in order."""
    parts: dict[str, list[str]] = {}
    titles: dict[str, str] = {}
    for c in candidates:
        parts.setdefault(c.doc_id, []).append(c.text)
        titles.setdefault(c.doc_id, c.title)
    return {d: titles[d] + "\n" + "\n".join(ts) for d, ts in parts.items()}


def lexical_rerank(query: str, candidates: Sequence[Candidate]) -> list[float]:
    """The lexical second stage, one score per candidate (higher is better).

    Per document: z-fusion of the first-stage score (its best chunk), the best cosine, and stemmed BM25
    over the document's candidate chunks joined (`pool_bm25`, document frequencies from the pool). Each
    chunk then scores as its document plus a small share of its own prior, so a document's chunks stay
    together, best first."""
    if not candidates:
        return []
    texts = document_texts(candidates)
    prior = doc_scores((c.doc_id, c.prior) for c in candidates)
    signals: list[Mapping[str, float]] = [prior, pool_bm25(query, texts)]
    rel = [(c.doc_id, c.relevance) for c in candidates if c.relevance is not None]
    if rel:
        signals.append(doc_scores((d, float(r)) for d, r in rel))
    fused = zfuse(signals, list(texts))
    z_prior = zscore({str(i): c.prior for i, c in enumerate(candidates)})
    return [fused[c.doc_id] + 1e-3 * z_prior[str(i)] for i, c in enumerate(candidates)]
