"""The online verifier's policy (ragstream.core.verify.sampled / online_verdict), pure."""

from __future__ import annotations

import pytest

from ragstream.core.verify import (
    Claim,
    OnlineVerdict,
    claims_novel_terms,
    claims_of,
    novel_terms,
    online_verdict,
    sampled,
)

pytestmark = pytest.mark.unit

P = ("The acme cafeteria opens at eight in the morning and closes at three.",)
A, B, C = Claim("It opens at eight.", P), Claim("It closes at three.", P), Claim("It is free.", P)


def test_every_claim_supported_is_supported() -> None:
    assert online_verdict([A, B], [True, True]) == OnlineVerdict("supported", 1.0, 2)


def test_one_claim_judged_unsupported_makes_the_answer_unsupported_even_with_another_unjudged() -> None:
    v = online_verdict([A, B, C], [True, None, False])
    assert v.outcome == "unsupported" and v.unsupported_claims == (C.text,)
    assert v.support == pytest.approx(0.3333) and v.unjudged == 1 and v.claims == 3


def test_a_claim_left_unjudged_in_the_budget_is_unjudged() -> None:
    v = online_verdict([A, B], [True, None])
    assert (v.outcome, v.support, v.unjudged, v.unsupported_claims) == ("unjudged", 0.5, 1, ())


def test_claims_past_the_cap_count_as_unjudged() -> None:
    v = online_verdict([A, B, C], [True, True])  # only two were sent to the model
    assert v.outcome == "unjudged" and v.unjudged == 1 and v.support == pytest.approx(0.6667)


def test_no_claim_is_unjudged_not_supported() -> None:
    assert online_verdict([], []) == OnlineVerdict("unjudged", 0.0, 0)


def test_novel_names_and_numbers_are_unsupported_whatever_the_verdicts() -> None:
    q = "When does the cafeteria open?"
    claims = claims_of("The cafeteria opens at 9 [1]. Ask Berta.", {"1": P[0]}, list(P), q)
    novel = claims_novel_terms(claims, q)
    assert novel == ["9", "Berta"]  # "Ask" starts its sentence: not a name
    v = online_verdict(claims, [True, True], [*novel, "9"])
    assert v.outcome == "unsupported" and v.support == 0.0 and v.claims == 2
    assert v.novel_terms == ("9", "Berta") and v.unjudged == 0


def test_sentence_starts_and_stop_words_are_not_names_but_a_bare_phrase_is_checked() -> None:
    q = "When does the cafeteria open?"
    many = "The cafeteria opens at eight [1]. It closes at three [1]. However, parking is free."
    assert novel_terms(many, P, q) == ["It", "However"]  # the whole-answer check would fail it
    assert claims_novel_terms(claims_of(many, {"1": P[0]}, list(P), q), q) == []
    assert claims_novel_terms(claims_of("It closes at three.", {}, list(P), q), q) == []
    assert claims_novel_terms(claims_of("Berlin", {}, list(P), q), q) == ["Berlin"]
    # Each sentence against the passage it cites, not against all of them.
    other = "Parking in the north garage is free for staff on weekends."
    cited = claims_of("The garage is free on weekends [2].", {"1": P[0], "2": other}, [P[0], other], q)
    assert claims_novel_terms(cited, q) == []
    crossed = claims_of("The north garage opens at eight [1].", {"1": P[0], "2": other}, [P[0], other])
    assert claims_novel_terms(crossed) == []  # lowercase words are the model's to judge
    assert claims_novel_terms(claims_of("Staff park free at 8 [2].", {"2": other}, [other])) == ["8"]
    assert claims_novel_terms(claims_of("It has no passage.", {}, [])) == []


def test_a_paraphrase_with_the_passages_names_and_numbers_goes_to_the_model() -> None:
    assert novel_terms("Breakfast starts at eight at acme [1].", P, "When does it open?") == []


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.1, 0.5, 1.0])
def test_the_sample_is_stable_and_near_its_rate(rate: float) -> None:
    keys = [f"query-{i}" for i in range(4000)]
    picked = [k for k in keys if sampled(k, rate)]
    assert picked == [k for k in keys if sampled(k, rate)]  # the same answers every time
    assert abs(len(picked) / len(keys) - rate) < 0.02
    if rate in (0.0, 1.0):
        assert len(picked) == rate * len(keys)


def test_a_larger_rate_keeps_every_answer_a_smaller_one_picked() -> None:
    keys = [f"q{i}" for i in range(2000)]
    assert {k for k in keys if sampled(k, 0.02)} <= {k for k in keys if sampled(k, 0.1)}


def test_the_verifier_may_judge_with_its_own_endpoint_and_model() -> None:
    from ragstream.settings import LLMSettings, VerifierSettings

    llm = LLMSettings()
    assert VerifierSettings().llm(llm) is llm
    own = VerifierSettings(base_url="http://judge:8000/v1", model="judge-7b").llm(llm)
    assert (own.base_url, own.model, own.timeout_s) == ("http://judge:8000/v1", "judge-7b", llm.timeout_s)
    assert VerifierSettings().sample_rate == 0.1 and VerifierSettings().budget_s == 30.0
