"""Retrieval metrics over a run (query id -> ranked doc ids) and graded qrels, as BEIR/trec_eval define them.

A judgment with score <= 0 is not relevant. Queries absent from the run count as empty results (score 0),
so a system that returns nothing is never averaged away.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Run = Mapping[str, Sequence[str]]
Qrels = Mapping[str, Mapping[str, int]]


def _dedup(ranked: Sequence[str]) -> list[str]:
    # a doc listed twice must not be credited twice
    seen: set[str] = set()
    out: list[str] = []
    for d in ranked:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def recall_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 100) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_dedup(ranked)[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    for rank, d in enumerate(_dedup(ranked)[:k], start=1):
        if rels.get(d, 0) > 0:
            return 1.0 / rank
    return 0.0


def dcg(gains: Iterable[float]) -> float:
    """Sum of gain / log2(rank + 1), ranks from 1 (trec_eval's ndcg_cut, gain = graded relevance)."""
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def ndcg_at_k(ranked: Sequence[str], rels: Mapping[str, int], k: int = 10) -> float:
    ideal = dcg(sorted((r for r in rels.values() if r > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg(max(rels.get(d, 0), 0) for d in _dedup(ranked)[:k]) / ideal


def empty_result_rate(run: Run, qids: Iterable[str]) -> float:
    ids = list(qids)
    if not ids:
        return 0.0
    return sum(1 for q in ids if not run.get(q)) / len(ids)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def summarize(run: Run, qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, recall@100 and MRR@10 over the judged queries, plus the empty-result rate."""
    qids = sorted(qrels)
    return {
        "ndcg_at_10": _mean([ndcg_at_k(run.get(q, ()), qrels[q], 10) for q in qids]),
        "recall_at_100": _mean([recall_at_k(run.get(q, ()), qrels[q], 100) for q in qids]),
        "mrr_at_10": _mean([mrr_at_k(run.get(q, ()), qrels[q], 10) for q in qids]),
        "empty_result_rate": empty_result_rate(run, qids),
        "queries": len(qids),
    }
