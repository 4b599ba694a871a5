"""The online verifier consumer over in-memory adapters: the real chains (`application.compose.wire`) on a
`MemoryBus`, `MemoryChunkStore`, `ExtractiveStub`, and a fake claim verifier in place of the model. A
sampled answer yields one AnswerVerified with the policy's outcome; unsampled and abstained answers, token
deltas and failures yield nothing; a replay publishes the same event id."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import Any

import httpx
import pytest
from opentelemetry import context as otel_context

from application.compose import MODULES, wire
from ragstream.adapters.embedder import HashEmbedder
from ragstream.adapters.llm import ExtractiveStub
from ragstream.adapters.memory_store import MemoryChunkStore
from ragstream.adapters.reranker import NoReranker
from ragstream.core.tokenizer import WhitespaceTokenizer
from ragstream.core.verify import Claim, sampled
from ragstream.runtime.deps import Deps, chunking_policy
from ragstream.runtime.memory_bus import MemoryBus
from ragstream.runtime.worker import Inbound
from ragstream.settings import Settings, VerifierSettings
from schemas.envelope import utcnow
from schemas.ingestion import Acl, DocumentChanged
from schemas.serving import (
    AnswerDelta,
    Caller,
    Citation,
    QueryAnswered,
    QueryFailed,
    QueryRequested,
    QuerySpec,
)
from schemas.topics import ANSWERS, ANSWERS_VERIFIED, EVALUATION, INGESTION, SERVING, SOURCE_CHANGES
from schemas.verification import AnswerVerified

pytestmark = pytest.mark.component

HANDBOOK = """# Handbook

## Cafeteria

The acme cafeteria opens at eight in the morning and closes at three.

## Parking

Parking in the north garage is free for staff on weekends.
"""
STAFF = ("staff",)


@dataclass(frozen=True)
class Verdicts:
    verdicts: tuple[bool | None, ...]
    seconds: float = 0.0


@dataclass
class FakeVerifier:
    """Judges every claim `verdict` (None: not judged), or raises `error`; records what it was asked."""

    verdict: bool | None = True
    error: Exception | None = None
    calls: list[list[Claim]] = field(default_factory=list)

    def verify_claims(self, claims: Sequence[Claim]) -> Verdicts:
        self.calls.append(list(claims))
        if self.error is not None:
            raise self.error
        return Verdicts(tuple(self.verdict for _ in claims))


@dataclass
class Platform:
    bus: MemoryBus
    store: MemoryChunkStore
    verifier: FakeVerifier

    async def ask(self, question: str, groups: Sequence[str] = STAFF) -> QueryAnswered:
        now = utcnow()
        req = QueryRequested(
            tenant_id="acme",
            query=QuerySpec(
                query_id=str(uuid.uuid4()),
                question=question,
                caller=Caller(subject="ann", groups=tuple(groups)),
                deadline_at=now + timedelta(seconds=30),
                requested_at=now,
            ),
        )
        await self.bus.publish("ragstream.query.requested.v1", req)
        await self.bus.drain()
        (final,) = [
            e
            for e in self.bus.events(ANSWERS.name)
            if e.query_id == req.query.query_id and isinstance(e, QueryAnswered)
        ]
        return final

    def verified(self, query_id: str | None = None) -> list[AnswerVerified]:
        return [e for e in self.bus.events(ANSWERS_VERIFIED.name) if query_id in (None, e.query_id)]

    def chunk(self, needle: str) -> dict[str, Any]:
        return next(c for c in self.store.iter_chunks("acme") if needle in c["text"])


async def platform(rate: float = 1.0, verifier: FakeVerifier | None = None) -> Platform:
    settings = Settings(verifier=VerifierSettings(sample_rate=rate))
    bus, store = MemoryBus(settings), MemoryChunkStore()
    fake = verifier or FakeVerifier()
    deps = Deps(
        settings,
        store=store,
        embedder=HashEmbedder(64),
        tokenizer=WhitespaceTokenizer(),
        policy=chunking_policy(settings),
        reranker=NoReranker(),
        llm=ExtractiveStub(),
        verifier=fake,
        send=partial(bus.producer.send_many, wait=False),
    )
    for name in (*INGESTION, *SERVING, *EVALUATION):
        bus.register(MODULES[name].SPEC, wire(name, deps, bus.producer).handler)  # type: ignore[arg-type]
    doc = DocumentChanged(
        tenant_id="acme",
        op="upsert",
        document_id="handbook.md",
        mime_type="text/markdown",
        title="Handbook",
        acl=Acl(groups=STAFF),
        content_b64=base64.b64encode(HANDBOOK.encode()).decode(),
    )
    await bus.publish(SOURCE_CHANGES.name, doc)
    await bus.drain()
    return Platform(bus, store, fake)


def answered(p: Platform, answer: str, cite: str = "cafeteria", **kw: Any) -> QueryAnswered:
    chunk = p.chunk(cite)
    return QueryAnswered(
        tenant_id="acme",
        query_id=kw.pop("query_id", str(uuid.uuid4())),
        subject="ann",
        question=kw.pop("question", "When does the cafeteria open?"),
        answer=answer,
        citations=(Citation(citation_id="1", document_id="handbook.md", chunk_id=chunk["chunk_id"]),),
        context_chunk_ids=(chunk["chunk_id"],),
        model="m",
        **kw,
    )


async def test_a_sampled_answer_is_verified_after_it_was_answered() -> None:
    p = await platform()
    final = await p.ask("When does the cafeteria open?")
    assert not final.abstained and final.question == "When does the cafeteria open?"
    (v,) = p.verified(final.query_id)
    assert v.outcome == "supported" and v.supported and v.support == 1.0
    assert v.claims >= 1 and v.unjudged == 0 and not v.novel_terms
    assert v.causation_id == final.event_id and v.correlation_id == final.correlation_id
    assert v.sampled_rate == 1.0 and v.model == "extractive-stub" and v.generation == final.generation
    # The model judged the answer's claims against the passage it cited.
    (claims,) = p.verifier.calls
    assert all(any("cafeteria" in t for t in c.passages) for c in claims)
    key = next(r.key for r in p.bus.records[ANSWERS_VERIFIED.name])
    assert key == final.query_id.encode()


@pytest.mark.parametrize(
    ("verdict", "outcome", "support"), [(False, "unsupported", 0.0), (None, "unjudged", 0.0)]
)
async def test_the_models_verdicts_decide_the_outcome(
    verdict: bool | None, outcome: str, support: float
) -> None:
    p = await platform(verifier=FakeVerifier(verdict=verdict))
    final = await p.ask("When does the cafeteria open?")
    (v,) = p.verified(final.query_id)
    assert v.outcome == outcome and not v.supported and v.support == support
    assert (len(v.unsupported_claims) == v.claims) is (verdict is False)
    assert v.unjudged == (v.claims if verdict is None else 0)


async def test_a_name_or_number_the_cited_passage_lacks_is_unsupported_without_a_model_call() -> None:
    p = await platform()
    ev = answered(p, "The acme cafeteria opens at 9 in Berlin [1].")
    await p.bus.publish(ANSWERS.name, ev)
    await p.bus.drain()
    (v,) = p.verified(ev.query_id)
    assert v.outcome == "unsupported" and v.support == 0.0
    assert set(v.novel_terms) == {"9", "Berlin"}
    assert p.verifier.calls == []


async def test_a_model_that_is_down_leaves_the_answer_unjudged_and_nothing_dead_lettered() -> None:
    p = await platform(verifier=FakeVerifier(error=httpx.ConnectError("refused")))
    final = await p.ask("When does the cafeteria open?")
    (v,) = p.verified(final.query_id)
    assert v.outcome == "unjudged" and v.unjudged == v.claims >= 1
    assert p.bus.dead_letters(ANSWERS.name) == []


async def test_unsampled_and_abstained_answers_deltas_and_failures_yield_nothing() -> None:
    p = await platform(rate=0.0)
    await p.ask("When does the cafeteria open?")
    assert p.bus.events(ANSWERS.name)  # deltas and the answer went by
    assert p.verified() == [] and p.verifier.calls == []

    p = await platform(rate=1.0)
    abstained = await p.ask("When does the cafeteria open?", groups=("visitors",))
    assert abstained.abstained
    for ev in (
        AnswerDelta(tenant_id="acme", query_id="q1", seq=0, text="The"),
        QueryFailed(tenant_id="acme", query_id="q2", stage="generation", reason="x", code="internal"),
        answered(p, "The cafeteria opens at eight [1].", abstained=True),
    ):
        await p.bus.publish(ANSWERS.name, ev)
    await p.bus.drain()
    assert p.verified() == [] and p.verifier.calls == []
    assert p.bus.dead_letters(ANSWERS.name) == []


async def test_the_sample_is_a_stable_hash_of_the_query_id() -> None:
    p = await platform(rate=0.5)
    events = [answered(p, "The acme cafeteria opens at eight [1].", query_id=f"q-{i}") for i in range(40)]
    for ev in events:
        await p.bus.publish(ANSWERS.name, ev)
    await p.bus.drain()
    got = {v.query_id for v in p.verified()}
    assert got == {ev.query_id for ev in events if sampled(ev.query_id, 0.5)}
    assert 0 < len(got) < 40
    assert all(v.sampled_rate == 0.5 for v in p.verified())


async def test_a_replay_publishes_the_same_event_id() -> None:
    p = await platform()
    ev = answered(p, "The acme cafeteria opens at eight [1].")
    for _ in range(2):
        await p.bus.publish(ANSWERS.name, ev)
        await p.bus.drain()
    first, second = p.verified(ev.query_id)
    assert first.event_id == second.event_id and first.outcome == second.outcome == "supported"
    other = answered(p, ev.answer, query_id=ev.query_id)  # another answer event for the same query
    await p.bus.publish(ANSWERS.name, other)
    await p.bus.drain()
    assert p.verified(ev.query_id)[-1].event_id != first.event_id


async def test_a_long_batch_stops_calling_the_model_and_publishes_the_rest_unjudged() -> None:
    p = await platform()
    module = MODULES["verifier"]
    s = Settings(verifier=VerifierSettings(sample_rate=1.0))
    stage = replace(module.component(Deps(s, store=p.store, verifier=p.verifier)), batch_limit_s=0.0)
    handle = module.handler_for(stage)
    events = [answered(p, "The acme cafeteria opens at eight [1].") for _ in range(3)]
    outs = await handle([Inbound(None, ev, otel_context.get_current()) for ev in events])  # type: ignore[arg-type]
    assert [o.event.outcome for o in outs] == ["supported", "unjudged", "unjudged"]
    assert len(p.verifier.calls) == 1 and [o.key for o in outs] == [e.query_id.encode() for e in events]
    # The default leaves a batch room to finish before the worker would count as stuck.
    assert module.component(Deps(s, store=p.store, verifier=p.verifier)).batch_limit_s == (
        s.worker.stuck_after_s - 2 * s.verifier.budget_s
    )
