"""Compatibility re-export: the ranking helpers live in `ragstream.core.fuse` (served and measured)."""

from ragstream.core.fuse import (
    STOPWORDS,
    Scores,
    convex,
    doc_scores,
    minmax,
    pool_bm25,
    ranked,
    rocchio,
    rrf,
    stemmed_terms,
    zfuse,
    zscore,
)

__all__ = [
    "STOPWORDS",
    "Scores",
    "convex",
    "doc_scores",
    "minmax",
    "pool_bm25",
    "ranked",
    "rocchio",
    "rrf",
    "stemmed_terms",
    "zfuse",
    "zscore",
]
