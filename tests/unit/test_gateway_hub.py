"""AnswerHub routing (ordering, replays, ownership, TTL) and admission thresholds, without I/O."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from gateway.auth import Principal
from gateway.backpressure import Admission
from gateway.hub import AnswerHub
from ragstream.settings import ServingSettings
from schemas.envelope import utcnow
from schemas.serving import AnswerDelta, QueryAnswered, QueryFailed, QueryRequested, QuerySpec

pytestmark = pytest.mark.unit
ALICE = Principal(tenant_id="acme", subject="alice", groups=("everyone",))


def delta(seq: int, text: str, tenant: str = "acme", qid: str = "q1") -> AnswerDelta:
    return AnswerDelta(tenant_id=tenant, query_id=qid, seq=seq, text=text)


def done(
    answer: str = "A [1]", tenant: str = "acme", qid: str = "q1", subject: str = "alice"
) -> QueryAnswered:
    return QueryAnswered(tenant_id=tenant, query_id=qid, subject=subject, answer=answer)


def test_replayed_deltas_and_second_final_are_ignored() -> None:
    hub = AnswerHub()
    hub.register("q1", ALICE, "interactive", 30)
    for ev in (delta(0, "A "), delta(1, "B"), delta(0, "A "), delta(1, "B"), done("first"), done("second")):
        hub.dispatch(ev)
    rec = hub.lookup("q1", ALICE)
    assert rec is not None and rec.partial == "A B"
    assert isinstance(rec.final, QueryAnswered) and rec.final.answer == "first"
    assert hub.inflight() == 0


def test_ownership_and_tenant_checks() -> None:
    hub = AnswerHub()
    hub.register("q1", ALICE, "interactive", 30)
    hub.dispatch(done(tenant="globex"))  # same id from another tenant: ignored
    assert hub.lookup("q1", ALICE).final is None  # type: ignore[union-attr]
    assert hub.lookup("q1", ALICE.model_copy(update={"tenant_id": "globex"})) is None
    assert hub.lookup("q1", ALICE.model_copy(update={"subject": "bob"})) is None
    assert hub.lookup("nope", ALICE) is None


def test_foreign_finals_are_kept_foreign_deltas_are_not() -> None:
    hub = AnswerHub()
    hub.dispatch(delta(0, "x", qid="other"))
    assert "other" not in hub.records
    hub.dispatch(done(qid="other"))
    assert hub.lookup("other", ALICE) is not None and hub.inflight() == 0
    hub.dispatch(QueryFailed(tenant_id="acme", query_id="anon", stage="retrieval", reason="x"))
    assert "anon" not in hub.records  # no subject: nobody could read it


def test_deadline_and_ttl_sweep() -> None:
    hub = AnswerHub(ttl_s=0.0)
    hub.register("q1", ALICE, "interactive", -1)
    hub.register("q2", ALICE, "interactive", 30)
    assert hub.inflight() == 2
    hub.sweep()  # q1 expires (gateway QueryFailed), then is dropped at TTL 0
    assert hub.inflight() == 1
    time.sleep(0.001)
    hub.sweep()
    assert "q1" not in hub.records and "q2" in hub.records


async def test_follow_replays_then_waits_for_the_rest() -> None:
    hub = AnswerHub()
    hub.register("q1", ALICE, "interactive", 30)
    hub.dispatch(delta(0, "a"))
    hub.dispatch(delta(1, "b"))
    rec = hub.records["q1"]

    async def later() -> None:
        await asyncio.sleep(0.01)
        hub.dispatch(delta(2, "c"))
        await asyncio.sleep(0.01)
        hub.dispatch(done())

    task = asyncio.create_task(later())
    got = [getattr(e, "text", e.type) async for e in hub.follow(rec, after_seq=0)]
    await task
    assert got == ["b", "c", "QueryAnswered"]


async def test_wait_returns_gateway_failure_at_deadline() -> None:
    hub = AnswerHub()
    hub.register("q1", ALICE, "interactive", 0.05)
    final = await asyncio.wait_for(hub.wait(hub.records["q1"]), 2)
    assert isinstance(final, QueryFailed) and final.stage == "gateway" and "deadline" in final.reason


def test_admission_thresholds() -> None:
    cfg = ServingSettings(max_inflight=10, max_lag=100)
    inflight = [0]
    adm = Admission(cfg, lambda: inflight[0])
    assert adm.check("interactive") is None and adm.check("batch") is None
    inflight[0] = 5
    assert adm.check("interactive") is None
    assert adm.check("batch").reason == "inflight"  # type: ignore[union-attr]
    inflight[0] = 10
    assert adm.check("interactive").retry_after_s == 1  # type: ignore[union-attr]
    inflight[0] = 0
    adm.lag = 60
    assert adm.check("interactive") is None and adm.check("batch") is not None
    adm.lag = 450
    r = adm.check("interactive")
    assert r is not None and r.reason == "lag" and r.retry_after_s == 5


def test_queries_accepted_by_another_replica_are_followed_here() -> None:
    hub = AnswerHub()
    spec = QuerySpec(
        query_id="q9", question="q", caller=ALICE.caller(), deadline_at=utcnow() + timedelta(seconds=30)
    )
    hub.dispatch(QueryRequested(tenant_id="acme", query=spec))
    assert hub.inflight() == 0  # not ours to count
    rec = hub.lookup("q9", ALICE)
    assert rec is not None and rec.final is None and 25 < rec.deadline - time.monotonic() <= 30
    assert hub.lookup("q9", ALICE.model_copy(update={"tenant_id": "globex"})) is None
    hub.dispatch(delta(0, "x", qid="q9"))
    hub.dispatch(done(qid="q9"))
    assert rec.partial == "x" and isinstance(rec.final, QueryAnswered)
    # Our own request coming back from the topic changes nothing.
    hub.register("q10", ALICE, "batch", 30)
    hub.dispatch(QueryRequested(tenant_id="acme", query=spec.model_copy(update={"query_id": "q10"})))
    assert hub.records["q10"].local and hub.inflight() == 1
