"""Answers the groundedness scorers flag go to the review topic, with what a reviewer needs (and the ACL
the gateway checks before showing them); a supported answer is not flagged; a send that fails never fails
the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest

from consumers.serving.generation import Generator
from ragstream.core.review import flag_reasons
from ragstream.ports import Usage
from ragstream.runtime.worker import Outbound
from ragstream.settings import ConsoleSettings, ServingSettings
from schemas.envelope import utcnow
from schemas.review import REVIEW_FLAGGED, AnswerFlagged
from schemas.serving import Caller, Passage, QueryReranked, QuerySpec

pytestmark = pytest.mark.unit
PASSAGE = Passage(
    chunk_id="c-1",
    document_id="handbook.md",
    text="The cafeteria opens at eight in the morning.",
    source_version="v1",
    title="Handbook",
    acl_groups=("everyone",),
)


class Says:
    model = "stub"

    def __init__(self, text: str) -> None:
        self.text = text

    async def stream(
        self, messages: list[dict[str, str]], max_tokens: int, usage: Usage
    ) -> AsyncIterator[str]:
        yield self.text


def _event() -> QueryReranked:
    now = utcnow()
    q = QuerySpec(
        query_id="q-1",
        question="When does the cafeteria open?",
        caller=Caller(subject="alice", groups=("everyone",)),
        deadline_at=now + timedelta(seconds=30),
    )
    return QueryReranked(tenant_id="acme", query=q, passages=(PASSAGE,), generation="g1", reranker="none")


async def _answer(text: str, review: ConsoleSettings | None, fail: bool = False) -> list[Outbound]:
    sent: list[Outbound] = []

    async def send(items: Sequence[Outbound]) -> None:
        if fail and any(o.topic == REVIEW_FLAGGED.name for o in items):
            raise RuntimeError("broker gone")
        sent.extend(items)

    gen = Generator(store=None, llm=Says(text), cfg=ServingSettings(), review=review)
    final = await gen.answer(_event(), send)
    assert final.answer and not final.abstained
    return [o for o in sent if o.topic == REVIEW_FLAGGED.name]


def test_flag_reasons() -> None:
    assert flag_reasons(0.9, {"1": True}, 0.5) == ()
    assert flag_reasons(0.4, {}, 0.5) == ("low_support",)
    assert flag_reasons(1.0, {"1": True, "2": False}, 0.5) == ("unsupported_citation",)
    assert flag_reasons(0.0, {"1": False}, 0.5) == ("low_support", "unsupported_citation")


async def test_an_unsupported_answer_is_flagged_with_its_passages_and_acl() -> None:
    (out,) = await _answer("The cafeteria serves free lobster dinners on Mondays [1].", ConsoleSettings())
    ev = out.event
    assert isinstance(ev, AnswerFlagged) and out.key == b"q-1"
    assert ev.tenant_id == "acme" and ev.subject == "alice" and ev.groups == ("everyone",)
    assert "low_support" in ev.reasons and ev.groundedness < 0.5
    assert ev.unsupported_citations == ("1",) and "unsupported_citation" in ev.reasons
    (p,) = ev.passages
    assert p.document_id == "handbook.md" and p.acl_groups == ("everyone",) and p.supports is False
    assert ev.question == "When does the cafeteria open?"


async def test_a_supported_answer_or_disabled_review_is_not_flagged() -> None:
    assert await _answer("The cafeteria opens at eight in the morning [1].", ConsoleSettings()) == []
    unsupported = "The cafeteria serves free lobster dinners on Mondays [1]."
    assert await _answer(unsupported, None) == []
    assert await _answer(unsupported, ConsoleSettings(review_enabled=False)) == []


async def test_a_failed_flag_send_never_fails_the_answer() -> None:
    assert (
        await _answer(
            "The cafeteria serves free lobster dinners on Mondays [1].", ConsoleSettings(), fail=True
        )
        == []
    )
