"""Evaluation-plane events: the online model verifier's score of one answer.

The verifier consumer (`consumers.evaluation.verifier`) reads the answers topic in its own consumer group,
takes a sampled share of the non-abstained answers and publishes one `AnswerVerified` per sampled answer,
keyed by query id, to `ragstream.answers.verified.v1`. It carries scores and the answer's own claims, never
a passage's text (a reader sees nothing the asker was not shown).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.envelope import Event

# supported: every claim judged supported; unsupported: a name or number the cited passages lack, or a
# claim judged unsupported; unjudged: the model gave no verdict on some claim in time (or nothing to judge).
VerifyOutcome = Literal["supported", "unsupported", "unjudged"]


class AnswerVerified(Event):
    """One answer's groundedness as the model verifier judged it, after the answer was delivered."""

    type: Literal["AnswerVerified"] = "AnswerVerified"
    query_id: str
    subject: str = ""
    generation: str = ""
    model: str = ""  # the model that wrote the answer
    verifier: str = ""  # the model that judged it
    sampled_rate: float = Field(ge=0.0, le=1.0)  # the share of answers verified when this one was chosen
    outcome: VerifyOutcome
    support: float = Field(ge=0.0, le=1.0)  # share of the answer's claims judged supported
    supported: bool
    claims: int = Field(ge=0)
    unsupported_claims: tuple[str, ...] = ()
    novel_terms: tuple[str, ...] = ()  # names and numbers of the answer its cited passages lack
    unjudged: int = Field(default=0, ge=0)  # claims without a verdict within the time budget
    seconds: float = Field(default=0.0, ge=0.0)  # verification time (model calls included)
