"""Document-level ranking helpers used by `eval beir`, the published-figures parser and the tenant key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evals.beir import load_beir
from evals.beir_eval import corpus_tenant, published_figures
from evals.fusion import (
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
from ragstream.settings import IndexSettings, IngestSettings, Settings

pytestmark = pytest.mark.unit


def test_doc_scores_take_the_best_chunk() -> None:
    hits = [("a", 0.9), ("b", 0.8), ("a", 0.7), ("c", 0.1)]
    assert doc_scores(hits) == {"a": 0.9, "b": 0.8, "c": 0.1}
    plus = doc_scores(hits, "max+")
    assert plus["a"] == pytest.approx(0.97) and plus["b"] == 0.8
    assert ranked({"b": 1.0, "a": 1.0, "c": 2.0}) == ["c", "a", "b"]  # ties by id


def test_normalizations_and_fusion() -> None:
    assert minmax({"a": 2.0, "b": 4.0}) == {"a": 0.0, "b": 1.0}
    assert minmax({"a": 3.0}) == {"a": 1.0} and minmax({}) == {}
    z = zscore({"a": 1.0, "b": 3.0})
    assert z["a"] == pytest.approx(-1.0) and z["b"] == pytest.approx(1.0)
    fused = convex({"a": 10.0, "b": 0.0}, {"b": 1.0, "c": 0.0}, alpha=0.5)
    assert fused["b"] == pytest.approx(0.5) and fused["a"] == pytest.approx(0.5) and fused["c"] == 0.0
    r = rrf([["a", "b"], ["b", "c"]], k=60)
    assert ranked(r) == ["b", "a", "c"] and r["b"] == pytest.approx(1 / 61 + 1 / 62)


def test_rocchio_moves_toward_feedback_and_stays_unit() -> None:
    q = np.array([1.0, 0.0], dtype=np.float32)
    fb = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    v = rocchio(q, fb, beta=0.5)
    assert np.linalg.norm(v) == pytest.approx(1.0) and v[1] > 0 and v[0] > v[1]
    assert rocchio(q, np.zeros((0, 0), dtype=np.float32)) is q


def test_published_figures_from_a_datasets_readme(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(
        "# data\n\n## other/\n| system | nDCG@10 |\n|---|---|\n| X | 0.1 |\n\n"
        "## mini/ - a BEIR set\nPublished:\n| system | nDCG@10 | R@100 |\n|---|---|---|\n"
        "| BM25 | 0.665 | n/a |\n| dense | 0.645 | 0.925 |\n\n## next/\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    (tmp_path / "mini").mkdir()
    rows = published_figures(tmp_path / "mini")
    assert rows == [
        {"system": "BM25", "nDCG@10": "0.665", "R@100": "n/a"},
        {"system": "dense", "nDCG@10": "0.645", "R@100": "0.925"},
    ]
    assert published_figures(tmp_path / "absent") == []


def test_corpus_tenant_changes_with_corpus_generation_and_chunking(tmp_path: Path) -> None:
    d = tmp_path / "mini"
    (d / "qrels").mkdir(parents=True)
    (d / "corpus.jsonl").write_text('{"_id": "1", "title": "T", "text": "x"}\n')
    (d / "queries.jsonl").write_text('{"_id": "q", "text": "x?"}\n')
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\t1\t1\n")
    ds = load_beir(d)
    s = Settings()
    t = corpus_tenant(ds, s)
    assert t.startswith("beir-mini-") and len(t) <= 64 and t == corpus_tenant(ds, s)
    other_gen = s.model_copy(update={"index": IndexSettings(generation="g9")})
    other_chunks = s.model_copy(update={"ingest": IngestSettings(chunk_max_tokens=120)})
    assert len({t, corpus_tenant(ds, other_gen), corpus_tenant(ds, other_chunks)}) == 3
    (d / "corpus.jsonl").write_text('{"_id": "1", "title": "T", "text": "y"}\n')
    assert corpus_tenant(load_beir(d), s) != t


def test_pool_bm25_is_stemmed_document_level_and_uses_pool_statistics() -> None:
    docs = {
        "a": "Aspirin reduced the risk of stroke.",
        "b": "Statins reduce cholesterol. Statins reduce risk.",
        "c": "Weather report for the weekend.",
    }
    s = pool_bm25("Does aspirin reduce stroke risk?", docs)
    assert s["c"] == 0.0 and s["a"] > s["b"] > 0  # 'reduced'/'reduce' meet; rarer terms weigh more
    assert pool_bm25("anything", {}) == {}
    assert stemmed_terms("The studies reduced costs") == ["study", "reduc", "cost"]


def test_zfuse_over_a_pool() -> None:
    a = {"x": 3.0, "y": 1.0}
    b = {"y": 5.0, "z": 1.0}
    fused = zfuse([a, b], ["x", "y", "z"])
    assert set(fused) == {"x", "y", "z"} and fused["y"] > fused["z"] and fused["x"] > fused["z"]
    assert zfuse([a, b]) == zfuse([a, b], ["x", "y", "z"]) and zfuse([], []) == {}
