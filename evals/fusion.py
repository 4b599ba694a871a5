"""Pure ranking helpers for document-level retrieval over chunk hits: aggregation, normalization, fusion,
pseudo-relevance feedback. General methods (no constant depends on a corpus); candidates for
`ragstream/core/fuse.py` once the retrieval worker ranks documents rather than chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

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
