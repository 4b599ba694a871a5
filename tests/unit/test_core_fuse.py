"""The served second stage (`lexical`): pure scoring over candidates, and the rerank consumer using it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from consumers.serving.rerank import RerankStage
from ragstream.adapters.reranker import LexicalReranker, from_spec
from ragstream.core.fuse import Candidate, document_texts, first_stage, lexical_rerank
from ragstream.settings import ServingSettings
from schemas.envelope import utcnow
from schemas.serving import Caller, Passage, QueryRetrieved, QuerySpec

pytestmark = pytest.mark.unit


def test_lexical_rerank_prefers_the_document_with_the_stemmed_terms() -> None:
    cands = [
        Candidate("a", "Weather in spring is mild.", prior=1.0, relevance=0.5),
        Candidate("b", "Aspirin reduced the risk of stroke.", prior=0.9, relevance=0.5),
        Candidate("b", "Patients reducing doses saw strokes.", prior=0.2, relevance=0.4),
        Candidate("c", "Nothing relevant here.", prior=0.1, relevance=0.1),
    ]
    scores = lexical_rerank("does aspirin reduce strokes", cands)
    order = [c.doc_id for _, c in sorted(zip(scores, cands, strict=True), key=lambda x: -x[0])]
    assert order[:2] == ["b", "b"] and order[-1] == "c"
    assert scores[1] > scores[2]  # a document's chunks stay in prior order
    assert lexical_rerank("q", []) == []


def test_document_texts_and_first_stage() -> None:
    texts = document_texts([Candidate("a", "x", 0, title="T"), Candidate("a", "y", 0)])
    assert texts == {"a": "T\nx\ny"}
    fused = first_stage({"a": 3.0, "b": 1.0}, {"a": 0.2, "b": 0.9}, {})
    assert set(fused) == {"a", "b"}


def _retrieved(passages: list[Passage], cls: str = "interactive") -> QueryRetrieved:
    spec = QuerySpec(
        query_id="q1",
        question="aspirin stroke",
        caller=Caller(subject="u"),
        request_class=cls,  # type: ignore[arg-type]
        top_k=3,
        deadline_at=utcnow() + timedelta(seconds=30),
    )
    return QueryRetrieved(
        tenant_id="t", query=spec, rewritten="aspirin stroke", passages=tuple(passages), generation="g"
    )


def test_rerank_stage_serves_lexical_with_first_stage_signals() -> None:
    assert isinstance(from_spec("lexical"), LexicalReranker)
    ps = [
        Passage(chunk_id="1", document_id="a", text="spring weather", score=2.0, relevance=0.3),
        Passage(chunk_id="2", document_id="b", text="aspirin prevents stroke", score=1.0, relevance=0.6),
    ]
    out = RerankStage(LexicalReranker(), ServingSettings()).rerank(_retrieved(ps))
    assert out.reranker == "lexical" and out.fallback_reason is None
    assert [p.document_id for p in out.passages] == ["b", "a"]


def test_rerank_stage_falls_back_inside_the_interactive_budget() -> None:
    cfg = ServingSettings(rerank_budget_ms_interactive=1)
    ps = [Passage(chunk_id=str(i), document_id=str(i), text="t", score=1.0 / (i + 1)) for i in range(5)]
    out = RerankStage(LexicalReranker(), cfg, ms_per_candidate=5.0).rerank(_retrieved(ps))
    assert out.fallback_reason and [p.chunk_id for p in out.passages] == ["0", "1", "2"]
