"""Retrieval metrics against hand-computed values (trec_eval / BEIR definitions)."""

from __future__ import annotations

import math

import pytest

from evals.metrics import (
    dcg,
    empty_result_rate,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    summarize,
)

pytestmark = pytest.mark.unit

QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"d9": 1}}


def test_dcg_uses_log2_rank_plus_one() -> None:
    assert dcg([3, 2, 0, 1]) == pytest.approx(3 / 1 + 2 / math.log2(3) + 0 + 1 / math.log2(5))


def test_ndcg_graded_hand_computed() -> None:
    # DCG = 1/log2(2) + 0 + 2/log2(4) = 2; ideal = 2/1 + 1/log2(3)
    expected = 2 / (2 + 1 / math.log2(3))
    assert ndcg_at_k(["d2", "dx", "d1"], QRELS["q1"], 10) == pytest.approx(expected)
    assert ndcg_at_k(["d1", "d2"], QRELS["q1"], 10) == pytest.approx(1.0)
    assert ndcg_at_k(["dx", "d3"], QRELS["q1"], 10) == 0.0


def test_ndcg_cutoff_and_duplicates() -> None:
    # only the top 1 counts: d2 (gain 1) against the ideal d1 (gain 2)
    assert ndcg_at_k(["d2", "d1"], QRELS["q1"], 1) == pytest.approx(0.5)
    # a document listed twice is credited once
    assert ndcg_at_k(["d1", "d1", "d2"], QRELS["q1"], 10) == pytest.approx(1.0)


def test_recall_counts_only_positive_judgments() -> None:
    assert recall_at_k(["d3", "d2"], QRELS["q1"], 100) == pytest.approx(0.5)
    assert recall_at_k(["d2", "dx", "d1"], QRELS["q1"], 2) == pytest.approx(0.5)
    assert recall_at_k(["d2", "dx", "d1"], QRELS["q1"], 3) == pytest.approx(1.0)
    assert recall_at_k(["d1"], {"d1": 0}, 10) == 0.0


def test_mrr() -> None:
    assert mrr_at_k(["dx", "d3", "d1"], QRELS["q1"], 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["dx", "d3", "d1"], QRELS["q1"], 2) == 0.0
    assert mrr_at_k(["d2"], QRELS["q1"]) == 1.0


def test_summarize_means_over_judged_queries_and_counts_missing_as_empty() -> None:
    run = {"q1": ["d2", "dx", "d1"], "unjudged": ["d1"]}
    s = summarize(run, QRELS)
    assert s["ndcg_at_10"] == pytest.approx((2 / (2 + 1 / math.log2(3)) + 0.0) / 2)
    assert s["recall_at_100"] == pytest.approx(0.5)
    assert s["mrr_at_10"] == pytest.approx(0.5)
    assert s["empty_result_rate"] == pytest.approx(0.5)
    assert s["queries"] == 2


def test_empty_result_rate() -> None:
    assert empty_result_rate({"a": [], "b": ["x"]}, ["a", "b", "c"]) == pytest.approx(2 / 3)
    assert empty_result_rate({}, []) == 0.0
