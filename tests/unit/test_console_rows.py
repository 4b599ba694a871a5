"""The console's pure row shaping and checks: ACL and tenant filters, curated questions by the format's
rules, the review fold (first verdict stands, bounded)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.auth import Principal
from gateway.console_api import (
    CurationError,
    DecisionRequest,
    curated_question,
    dead_letter_row,
    review_visible,
    visible_documents,
)
from gateway.review import ReviewFold
from ragstream.ports import DocumentState
from schemas.dlq import DeadLetter
from schemas.envelope import utcnow
from schemas.review import AnswerFlagged, FlaggedPassage, ReviewDecided

pytestmark = pytest.mark.unit
ALICE = Principal(tenant_id="acme", subject="alice", groups=("everyone",))


def _state(
    doc: str, groups: tuple[str, ...] = ("everyone",), principals: tuple[str, ...] = ()
) -> DocumentState:
    return DocumentState(
        document_id=doc, live_version="v1", acl_groups=groups, acl_principals=principals, indexed_at=utcnow()
    )


def _flag(tenant: str = "acme", qid: str = "q1", groups: tuple[str, ...] = ("everyone",)) -> AnswerFlagged:
    return AnswerFlagged(
        tenant_id=tenant,
        query_id=qid,
        subject="bob",
        groups=("everyone", "finance"),
        question="When does it open?",
        answer="At nine [1].",
        reasons=("low_support",),
        groundedness=0.0,
        passages=(
            FlaggedPassage(
                citation_id="1", document_id="a.md", chunk_id="c", text="eight", acl_groups=groups
            ),
        ),
    )


def test_documents_the_acl_admits_named_users_counted_not_listed() -> None:
    states = [_state("a.md"), _state("b.md", ("finance",)), _state("c.md", (), ("alice",))]
    rows = visible_documents(ALICE, states, utcnow() + timedelta(seconds=10))
    assert {r["document_id"] for r in rows} == {"a.md", "c.md"}
    c = next(r for r in rows if r["document_id"] == "c.md")
    assert c["acl"] == {"groups": [], "principals": 1} and "alice" not in str(c)
    assert all(r["age_s"] >= 10 for r in rows)


def test_dead_letter_row_has_no_message_or_key() -> None:
    d = DeadLetter(
        dead_letter_id="d1",
        stage="chunker",
        consumer_group="g",
        reason="poison",
        error_class="ValueError",
        message="secret text of doc x",
        original_topic="p.ragstream.ingest.documents-chunked.v1",
        original_partition=0,
        original_offset=1,
        original_key_b64="YWNtZS94",
        raw_b64="",
        raw_truncated=True,
        failed_at=utcnow(),
    )
    row = dead_letter_row(d, "p.")
    assert row["topic"] == "ragstream.ingest.documents-chunked.v1" and row["replayable"] is False
    assert "secret" not in str(row) and "YWNtZS94" not in str(row)


def test_review_visible_needs_tenant_search_acl_and_live_acl() -> None:
    live = {"a.md": _state("a.md")}
    assert review_visible(ALICE, _flag(), live)
    assert not review_visible(ALICE, _flag(tenant="globex"), live)
    assert not review_visible(ALICE, _flag(groups=("finance",)), live)
    assert not review_visible(ALICE, _flag(), {"a.md": _state("a.md", ("finance",))})  # ACL changed since
    assert not review_visible(ALICE, _flag(), {})  # the document is gone


def test_curated_question_follows_the_format_rules() -> None:
    q = curated_question(_flag(), DecisionRequest(verdict="right"))
    assert q["expected_docs"] == ["a.md"] and q["user"] == "bob" and q["groups"] == ["everyone", "finance"]
    assert q["id"] == "review-q1" and "review-right" in q["tags"]
    q = curated_question(_flag(), DecisionRequest(verdict="wrong", expect_abstain=True))
    assert q["expect_abstain"] is True and "expected_docs" not in q
    for bad in (
        DecisionRequest(verdict="wrong"),
        DecisionRequest(verdict="right", expected_docs=["other.md"]),
        DecisionRequest(verdict="right", expect_abstain=True),
    ):
        with pytest.raises(CurationError):
            curated_question(_flag(), bad)


def test_review_fold_first_verdict_stands_and_is_bounded() -> None:
    fold = ReviewFold(max_pending=2)
    for i in range(3):
        fold.apply(_flag(qid=f"q{i}"))
    assert [f.query_id for f in fold.pending("acme")] == ["q2", "q1"]  # newest first, q0 dropped
    for verdict in ("wrong", "right"):
        fold.apply(ReviewDecided(tenant_id="acme", query_id="q1", reviewer="r", verdict=verdict))
    decision = fold.decision("acme", "q1")
    assert decision is not None and decision.verdict == "wrong"
    assert [f.query_id for f in fold.pending("acme")] == ["q2"] and fold.pending("globex") == []
