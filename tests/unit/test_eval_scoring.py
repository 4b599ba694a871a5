"""Scoring one question and a run: retrieval, citations, abstention, authorization exposures, thresholds."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from evals.questions import Question, Threshold
from evals.scoring import (
    Observed,
    aggregate,
    check_thresholds,
    fact_found,
    score_question,
    statements_by_citation,
    unknown_metrics,
)
from ragstream.core.groundedness import GroundednessScorer
from schemas.serving import Citation, Passage

pytestmark = pytest.mark.unit

DOCS = {
    "handbook.md": (["everyone"], "The cafeteria opens at eight in the morning and closes at three."),
    "lag.md": (["everyone"], "Consumer lag is the log end offset minus the committed offset."),
    "merger.md": (["finance"], "The secret merger code name is BLUEHERON-4471."),
}


class FakeView:
    def acl_of(self, tenant: str, document_ids: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
        return {d: ([], DOCS[d][0]) for d in document_ids if d in DOCS}

    def chunk_texts(self, tenant: str, chunk_ids: Sequence[str]) -> dict[str, str]:
        return {c: DOCS[c.removeprefix("c-")][1] for c in chunk_ids if c.removeprefix("c-") in DOCS}

    def document_texts(self, tenant: str, document_id: str) -> list[str]:
        return [DOCS[document_id][1]] if document_id in DOCS else []


def passage(doc: str) -> Passage:
    groups, text = DOCS[doc]
    return Passage(chunk_id=f"c-{doc}", document_id=doc, text=text, acl_groups=tuple(groups))


def q(**kw: object) -> Question:
    base = {
        "id": "q",
        "question": "When does the cafeteria open?",
        "tenant": "t",
        "user": "alice",
        "groups": ["everyone"],
    }
    return Question.model_validate({**base, **kw})


def obs(
    passages: list[Passage],
    answer: str | None,
    cites: list[str] = (),
    prompt: str | None = None,
    **kw: object,
) -> Observed:
    citations = tuple(
        Citation(citation_id=str(i + 1), document_id=d, chunk_id=f"c-{d}") for i, d in enumerate(cites)
    )
    defaults = {
        "query_id": "qid",
        "passages": tuple(passages),
        "answer": answer,
        "abstained": answer is not None and answer.startswith("I don't know"),
        "citations": citations,
        "prompt": prompt,
        "prompt_captured": True,
        "latency_ms": 120.0,
        "timings_ms": {"retrieval": 20.0, "generation": 80.0},
        "prompt_tokens": 300,
        "completion_tokens": 12,
    }
    return Observed(**{**defaults, **kw})


SCORER = GroundednessScorer()


def test_good_answer_scores_well() -> None:
    ps = [passage("handbook.md"), passage("lag.md")]
    prompt = "\n".join(p.text for p in ps)
    rec = score_question(
        q(expected_docs=["handbook.md"], expected_facts=["eight"]),
        obs(ps, "The cafeteria opens at eight in the morning [1].", ["handbook.md"], prompt),
        FakeView(),
        SCORER,
    )
    assert rec["recall_at_1"] == 1.0 and rec["mrr_at_10"] == 1.0 and rec["ndcg_at_10"] == 1.0
    assert rec["hit"] and rec["fact_recall"] == 1.0 and rec["abstention_correct"]
    assert rec["groundedness"] == 1.0 and rec["grounded"]
    assert rec["citation_checks"] == [
        {"id": "1", "chunk_id": "c-handbook.md", "exists": True, "in_prompt": True, "supports": True}
    ]
    assert not rec["unauthorized"] and rec["ok"]


def test_second_rank_and_unsupported_citation() -> None:
    ps = [passage("lag.md"), passage("handbook.md")]
    rec = score_question(
        q(expected_docs=["handbook.md"]),
        obs(ps, "The cafeteria opens at noon on Sundays [1].", ["lag.md"], "\n".join(p.text for p in ps)),
        FakeView(),
        SCORER,
    )
    assert rec["recall_at_1"] == 0.0 and rec["recall_at_5"] == 1.0 and rec["mrr_at_10"] == 0.5
    assert rec["citation_checks"][0]["supports"] is False
    assert rec["groundedness"] < 1.0


def test_citation_not_in_prompt_and_missing_chunk() -> None:
    ps = [passage("handbook.md")]
    answer = "The cafeteria opens at eight [1]. Lag is end offset minus committed offset [2]."
    o = obs(ps, answer, ["handbook.md", "lag.md"], ps[0].text)
    o = Observed(
        **{
            **o.__dict__,
            "citations": (*o.citations, Citation(citation_id="3", document_id="x", chunk_id="c-gone")),
        }
    )
    rec = score_question(q(expected_docs=["handbook.md"]), o, FakeView(), SCORER)
    checks = {c["id"]: c for c in rec["citation_checks"]}
    assert checks["1"]["in_prompt"] and not checks["2"]["in_prompt"] and not checks["3"]["exists"]
    assert not rec["ok"]


def test_abstention_expected_and_missed() -> None:
    good = score_question(
        q(expect_abstain=True), obs([], "I don't know based on the available documents."), FakeView(), SCORER
    )
    bad = score_question(
        q(expect_abstain=True),
        obs([passage("lag.md")], "Lag is offsets [1].", ["lag.md"]),
        FakeView(),
        SCORER,
    )
    assert good["abstention_correct"] and good["ok"] and not good["judged"]
    assert bad["abstention_correct"] is False and not bad["ok"]
    # An answerable question that abstains is a wrong abstention.
    rec = score_question(
        q(expected_docs=["handbook.md"]),
        obs([passage("handbook.md")], "I don't know based on the available documents."),
        FakeView(),
        SCORER,
    )
    assert rec["abstention_correct"] is False


def test_unauthorized_document_in_prompt_answer_and_citation() -> None:
    ps = [passage("merger.md"), passage("handbook.md")]
    rec = score_question(
        q(question="What is the merger code name?", must_never_cite=["merger.md"]),
        obs(ps, "The code name is BLUEHERON-4471 [1].", ["merger.md"], "\n".join(p.text for p in ps)),
        FakeView(),
        SCORER,
    )
    assert rec["unauthorized_retrieved"] == ["merger.md"]
    assert set(rec["exposures"]) == {"prompt", "answer", "citations"}
    assert rec["never_cite_violation"] and rec["unauthorized"] and not rec["ok"]


def test_filtered_before_the_prompt_is_a_breach_not_an_exposure() -> None:
    # The search let merger.md through, the second check kept it out of the prompt.
    ps = [passage("merger.md"), passage("handbook.md")]
    rec = score_question(
        q(question="merger?"),
        obs(ps, "The cafeteria opens at eight [1].", ["handbook.md"], ps[1].text),
        FakeView(),
        SCORER,
    )
    assert rec["unauthorized_retrieved"] == ["merger.md"] and rec["exposures"] == {}
    assert not rec["unauthorized"]
    # Without a captured prompt the retrieval output stands in for it (conservative).
    blind = score_question(
        q(question="merger?"),
        obs(ps, "The cafeteria opens at eight [1].", ["handbook.md"], None, prompt_captured=False),
        FakeView(),
        SCORER,
    )
    assert blind["exposures"] == {"prompt": ["merger.md"]}


def test_errors_count_as_misses() -> None:
    rec = score_question(q(expected_docs=["handbook.md"]), obs([], None, error="timeout"), FakeView(), SCORER)
    assert rec["recall_at_5"] == 0.0 and not rec["ok"] and rec["abstention_correct"] is False


def test_aggregate_and_thresholds() -> None:
    view = FakeView()
    recs = [
        score_question(
            q(id="a", expected_docs=["handbook.md"]),
            obs(
                [passage("handbook.md")],
                "The cafeteria opens at eight [1].",
                ["handbook.md"],
                DOCS["handbook.md"][1],
            ),
            view,
            SCORER,
        ),
        score_question(
            q(id="b", expected_docs=["lag.md"]),
            obs([], "I don't know based on the available documents."),
            view,
            SCORER,
        ),
        score_question(
            q(id="c", expect_abstain=True, request_class="batch"),
            obs([], "I don't know based on the available documents.", latency_ms=900.0),
            view,
            SCORER,
        ),
    ]
    m = aggregate(recs)
    assert m["questions"] == 3 and m["recall_at_5"] == 0.5 and m["empty_result_rate"] == 0.5
    assert m["abstention_accuracy"] == pytest.approx(2 / 3)
    assert m["unauthorized_document_rate"] == 0.0 and m["citation_accuracy"] == 1.0
    assert m["latency_interactive_e2e_ms_p50"] == 120.0 and m["latency_batch_e2e_ms_p99"] == 900.0
    assert m["latency_interactive_retrieval_ms_p95"] == 20.0 and m["prompt_tokens_total"] == 900.0
    failures = check_thresholds(m, {"recall_at_5": Threshold(min=0.8), "groundedness": Threshold(min=0.5)})
    assert failures == ["recall_at_5 = 0.5, needs >= 0.8"]
    assert check_thresholds(m, {"chunk_recall_at_10": Threshold(min=0.5)})[0].startswith(
        "chunk_recall_at_10: not measured"
    )


def test_a_failed_query_fails_the_run_whatever_the_thresholds() -> None:
    m = {"unauthorized_document_rate": 0.0, "error_rate": 0.05}
    assert check_thresholds(m, {"error_rate": Threshold(max=0.5)}) == ["error_rate = 0.05, needs <= 0"]


def test_unauthorized_bound_cannot_be_relaxed() -> None:
    m = {"unauthorized_document_rate": 0.1, "error_rate": 0.0}
    assert check_thresholds(m, {"unauthorized_document_rate": Threshold(max=0.5)}) == [
        "unauthorized_document_rate = 0.1, needs <= 0"
    ]


def test_unknown_metric_names() -> None:
    assert unknown_metrics(["recall_at_5", "latency_interactive_e2e_ms_p95", "prompt_tokens_p95"]) == []
    assert unknown_metrics(["recal_at_5", "latency_ms"]) == ["latency_ms", "recal_at_5"]


def test_helpers() -> None:
    assert fact_found("42,500 euros", "The budget is 42,500 Euros.") and not fact_found(
        "ORCHID-7731", "no code"
    )
    assert statements_by_citation("A is b [1]. C is d. [2] E [1][3]") == {
        "1": ["A is b.", "E"],
        "2": ["C is d."],
        "3": ["E"],
    }
    assert statements_by_citation("It costs 3.5 euros [1].") == {"1": ["It costs 3.5 euros."]}
