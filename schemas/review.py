"""The human review queue: answers the groundedness scorers flag, and a reviewer's verdict on each.

Generation publishes `AnswerFlagged` (keyed by query id) when an answer's support share is low or one of
its citations does not support the sentence citing it; the gateway follows the topic, lists a tenant's
pending reviews to its reviewers and publishes `ReviewDecided`. The flagged event carries the cited
passages' ACL as the search saw it, so a reader's authorization is checked before anything is shown.

These topics are not in `schemas.topics.TOPICS`: that registry is what every consumer group and the
chart's KafkaTopics are checked against, and no consumer group reads these (the gateway reads them by
assignment, like the answers topic). Whoever uses them creates them (`review_topic_specs`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.envelope import Event
from schemas.topics import TopicSpec

FlagReason = Literal["low_support", "unsupported_citation"]
Verdict = Literal["right", "wrong"]


class FlaggedPassage(BaseModel):
    """A passage the flagged answer cited (or, citing none, was given): enough to judge and authorize."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    citation_id: str
    document_id: str
    chunk_id: str
    source_version: str = ""
    title: str = ""
    text: str = Field(max_length=4000)
    acl_principals: tuple[str, ...] = ()
    acl_groups: tuple[str, ...] = ()
    supports: bool | None = None  # does it support the sentences citing it (None: not cited)


class AnswerFlagged(Event):
    type: Literal["AnswerFlagged"] = "AnswerFlagged"
    query_id: str
    subject: str
    groups: tuple[str, ...] = ()  # the asker's, so a curated question asks as the same identity
    question: str
    answer: str
    reasons: tuple[FlagReason, ...]
    groundedness: float
    unsupported_citations: tuple[str, ...] = ()
    passages: tuple[FlaggedPassage, ...] = ()
    generation: str = ""
    model: str = ""


class ReviewDecided(Event):
    type: Literal["ReviewDecided"] = "ReviewDecided"
    query_id: str
    reviewer: str
    verdict: Verdict
    note: str = Field(default="", max_length=1000)
    curated_question_id: str | None = None


REVIEW_FLAGGED = TopicSpec(
    "ragstream.review.flagged.v1",
    AnswerFlagged,
    "Answers the groundedness scorers flagged for human review",
    partitions=3,
    key="query_id",
    retention_ms=30 * 24 * 3600 * 1000,
)
REVIEW_DECISIONS = TopicSpec(
    "ragstream.review.decisions.v1",
    ReviewDecided,
    "Reviewers' verdicts (right / wrong) on flagged answers",
    partitions=3,
    key="query_id",
    retention_ms=30 * 24 * 3600 * 1000,
)


def review_topic_specs() -> tuple[TopicSpec, TopicSpec]:
    return REVIEW_FLAGGED, REVIEW_DECISIONS
