"""Earlier chat turns feed query rewrite: bounded history, salient terms for a follow-up only."""

from __future__ import annotations

import pytest

from gateway.openai_api import HISTORY_CHARS, HISTORY_TURNS, ChatCompletionRequest, history_of
from ragstream.core.rewrite import confine_history, is_follow_up, with_history

pytestmark = pytest.mark.unit


def test_follow_up_gets_the_earlier_questions_content_words() -> None:
    out = with_history("And on weekends?", ["When does the acme cafeteria open?"])
    assert out.startswith("And on weekends?")
    assert {"acme", "cafeteria", "open"} <= set(out.split())
    assert "when" not in out.lower().split()[3:] and "does" not in out.split()


def test_pronoun_makes_a_long_question_a_follow_up() -> None:
    q = "How many people does it seat at lunch on the ground floor of the building?"
    assert is_follow_up(q)
    assert "cafeteria" in with_history(q, ["Tell me about the acme cafeteria"])


def test_self_contained_question_and_no_history_are_unchanged() -> None:
    q = "What is the travel reimbursement limit for international economy flights?"
    assert with_history(q, ["payroll schedule"]) == q
    assert with_history("  And\ton weekends? ", []) == "And on weekends?"


def test_newest_turn_first_terms_once_bounded() -> None:
    out = with_history("And then?", ["payroll deadline", "cafeteria payroll"])
    assert out == "And then? cafeteria payroll deadline"
    assert len(with_history("And then?", ["payroll deadline", "cafeteria payroll"], max_chars=25)) <= 25


def test_confine_history_bounds_turns_and_characters() -> None:
    turns = [f"turn {i} " + "x" * 300 for i in range(10)]
    kept = confine_history(turns, max_turns=4, max_chars=700)
    assert len(kept) <= 4 and sum(map(len, kept)) <= 700
    assert kept[-1].startswith("turn 9") and kept[0].startswith("turn 7")
    assert confine_history(["\x00 a \n b"], 4, 100) == ("a b",)
    assert confine_history(turns, max_turns=0) == ()


def test_history_of_takes_earlier_user_turns_only_bounded() -> None:
    body = ChatCompletionRequest.model_validate(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                *(
                    m
                    for i in range(10)
                    for m in (
                        {"role": "user", "content": f"question {i} about cafeteria " + "y" * 400},
                        {"role": "assistant", "content": "the secret assistant text"},
                    )
                ),
                {"role": "user", "content": [{"type": "text", "text": "And on weekends?"}]},
            ]
        }
    )
    hist = history_of(body)
    assert 0 < len(hist) <= HISTORY_TURNS and sum(map(len, hist)) <= HISTORY_CHARS
    assert all("assistant" not in h and "be brief" not in h for h in hist)
    assert hist[-1].startswith("question 9")
    assert "And on weekends?" not in hist
