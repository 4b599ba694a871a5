"""The model verifier's pure half (claims, prompt, verdict parsing, cache keys), the hard set's swap and
the BEIR question-set writer."""

from __future__ import annotations

import pytest

from evals.beir import BeirDataset, BeirDoc
from evals.beir_set import set_rows
from evals.halueval import judge_for
from evals.hardset import swap
from evals.questions import QuestionSet
from ragstream.adapters.verifier import ModelVerifier
from ragstream.core.groundedness import GroundednessScorer
from ragstream.core.verify import (
    Claim,
    agrees,
    claims_of,
    clean_extraction,
    messages,
    novel_terms,
    parse_verdicts,
)
from ragstream.settings import LLMSettings

pytestmark = pytest.mark.unit


def test_claims_take_the_passages_they_cite() -> None:
    cs = claims_of("Paris is the capital [1]. It has 2 million people [2].", {"1": "A", "2": "B"}, ["X"])
    assert [c.passages for c in cs] == [("A",), ("B",)]
    assert "[1]" not in cs[0].text
    bare = claims_of("Arthur's Magazine", {}, ["K"], question="Which came first?")
    assert bare[0].passages == ("K",) and "Which came first?" in bare[0].text
    assert Claim("a", ("p",)).key != Claim("a", ("q",)).key


def test_prompt_and_verdicts() -> None:
    msgs = messages([Claim("c1", ("p",)), Claim("c2", ("p",))])
    assert msgs[1]["content"].count("[P1]") == 1 and "2. c2" in msgs[1]["content"]
    assert parse_verdicts(
        '{"verdicts": [{"id": 2, "supported": false}, {"id": 1, "supported": true}]}', 2
    ) == [
        True,
        False,
    ]
    assert parse_verdicts("no json", 2) == [None, None]
    assert parse_verdicts('{"verdicts": [{"id": 9, "supported": true}]}', 1) == [None]


def test_verifier_caches_and_bounds_time() -> None:
    calls: list[int] = []

    class Fake(ModelVerifier):
        def _ask(self, claims):  # type: ignore[no-untyped-def]
            calls.append(len(claims))
            return [True] * len(claims)

    v = Fake(LLMSettings())
    first = v.verify("One fact. Two facts.", ["p"])
    again = v.verify("One fact. Two facts.", ["p"])
    assert first.supported and again.supported and calls == [2]
    slow = Fake(LLMSettings(), budget_s=-1.0)
    assert slow.verify("New fact.", ["p"]).verdicts == (None,)


def test_swap_uses_the_passage_words() -> None:
    k = "The band was formed in 1994 by John Smith. Later Mary Jones joined them in 1999."
    assert swap("It was formed in 1994.", k, "When was it formed?") == "It was formed in 1999."
    wrong = swap("John Smith formed it.", k, "Who formed the band?")
    assert wrong == "Mary Jones formed it."
    assert swap("nothing to swap", k, "q") is None


def test_beir_set_rows_validate() -> None:
    ds = BeirDataset(
        "mini",
        {"d1": BeirDoc("d1", "T", "text one"), "d2": BeirDoc("d2", "", "text two")},
        {"q1": "a query"},
        {"q1": {"d1": 2, "d2": 0}},
    )
    head, *qs = set_rows(ds, "beir-mini-x", limit=None, top_k=50, request_class="batch")
    qset = QuestionSet.model_validate({**head["set"], "questions": qs})  # type: ignore[dict-item]
    assert qset.questions[0].expected_docs == {"d1": 2} and len(qset.documents) == 2


K = "The band was formed in 1994 by John Smith in Leeds. Later Mary Jones joined them in 1999."


def test_agreement_compares_names_and_numbers_with_the_passages_own_answer() -> None:
    q = "Who formed the band?"
    assert agrees("The group was founded by John Smith [1].", "John Smith", q) is True
    assert agrees("The group was founded by Mary Jones.", "John Smith", q) is False
    assert agrees("It was set up in 1999.", "1994", "When was the band formed?") is False
    # the answer is one of the options the question names
    which = "Which came first, Arthur's Magazine or First for Women?"
    assert agrees("Arthur's Magazine did.", "Arthur's Magazine", which) is True
    assert agrees("First for Women came first.", "Arthur's Magazine", which) is False
    assert agrees("Yes, both are.", "Yes", "Are both bands British?") is True
    assert agrees("No.", "Yes", "Are both bands British?") is False
    assert agrees("anything", None, q) is None
    assert clean_extraction("unknown") is None and clean_extraction('"John Smith."\nmore') == "John Smith"


def test_novel_terms_are_names_and_numbers_the_passage_lacks() -> None:
    assert novel_terms("It was formed in 1994 by John Smith.", [K], "Who formed it?") == []
    assert novel_terms("It was formed in 1996 in York.", [K], "When?") == ["1996", "York"]


def test_combined_judge_extracts_once_per_question() -> None:
    extracted: list[str] = []

    class Fake(ModelVerifier):
        def extract(self, question, passages):  # type: ignore[no-untyped-def]
            extracted.append(question)
            return "John Smith"

        def _ask(self, claims):  # type: ignore[no-untyped-def]
            raise AssertionError("agreement decided; no claim verdict needed")

    judge = judge_for("combined", GroundednessScorer(), Fake(LLMSettings()))
    q = "Who formed the band?"
    assert judge("The group's founder was John Smith.", K, q)
    assert not judge("The group's founder was Mary Jones.", K, q)
    assert not judge("The group's founder was Paul Kerr.", K, q)  # a name the passage lacks: no model call
    assert extracted == [q, q]
