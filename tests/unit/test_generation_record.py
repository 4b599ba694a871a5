"""Generation records (content addressing), the registry view's fold, canary split and routing order."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from ragstream.generations.record import (
    GenerationEvent,
    GenerationRecord,
    GenerationSpec,
    RegistryView,
    SourceSnapshot,
    default_name,
    stable_share,
)
from ragstream.generations.routing import GenerationRouter, UnknownGenerationError
from ragstream.settings import IndexSettings
from schemas.envelope import utcnow

pytestmark = pytest.mark.unit


def spec(**changes: Any) -> GenerationSpec:
    base: dict[str, Any] = {
        "index": "RagChunks",
        "source": SourceSnapshot(topic="src", offsets={0: 10, 1: 7}),
        "normalizer_version": "n1",
        "chunking_policy": {"max_tokens": 200},
        "policy_hash": "p1",
        "embedding_model": "m",
        "embedding_revision": "r",
        "embedding_dimensions": 384,
    }
    return GenerationSpec(**{**base, **changes})


def record(name: str, minutes: int = 0, **changes: Any) -> GenerationRecord:
    s = spec(**changes)
    return GenerationRecord(
        generation_id=s.content_id(),
        name=name,
        spec=s,
        chunks_collection=f"RagChunks_{name}",
        documents_collection=f"RagDocuments_{name}",
        created_at=utcnow() + timedelta(minutes=minutes),
    )


class Log:
    """Events with strictly increasing seq, as the registry orders them."""

    def __init__(self) -> None:
        self.events: list[GenerationEvent] = []

    def add(self, gen: str, kind: Any, tenant: str | None = None, **data: Any) -> None:
        ev = GenerationEvent.new(gen, kind, tenant=tenant, data=data)
        self.events.append(ev.model_copy(update={"seq": len(self.events)}))


def test_content_id_is_deterministic_and_covers_every_input() -> None:
    assert spec().content_id() == spec().content_id()
    ids = {
        spec().content_id(),
        spec(policy_hash="p2").content_id(),
        spec(embedding_model="m2").content_id(),
        spec(embedding_revision="r2").content_id(),
        spec(normalizer_version="n2").content_id(),
        spec(source=SourceSnapshot(topic="src", offsets={0: 11, 1: 7})).content_id(),
        spec(source=None).content_id(),
    }
    assert len(ids) == 7
    assert default_name(spec().content_id()) == "g" + spec().content_id()[:10]


def test_record_verify_detects_tampering() -> None:
    r = record("g1")
    r.verify()
    forged = r.model_copy(update={"spec": spec(policy_hash="other")})
    with pytest.raises(ValueError, match="does not match"):
        forged.verify()
    with pytest.raises(Exception):  # noqa: B017 - frozen: a record is never edited in place
        r.name = "x"  # type: ignore[misc]


def test_fold_promote_tenant_pin_rollback_retire() -> None:
    recs = [record("g1", 0), record("g2", 1, policy_hash="p2"), record("g3", 2, policy_hash="p3")]
    log = Log()
    log.add("g1", "ready")
    log.add("g1", "adopted")
    log.add("g2", "ready")
    log.add("g3", "ready")
    view = RegistryView.fold(recs, log.events)
    assert view.live == "g1" and view.status("g2") == "ready" and view.previous() is None

    log.add("g2", "promoted", tenant="acme")
    view = RegistryView.fold(recs, log.events)
    assert view.live == "g1" and view.tenant_generation("acme") == "g2"
    assert view.status("g2") == "live-for-tenants" and view.previous("acme") == "g1"

    log.add("g1", "rolled_back", tenant="acme", **{"from": "g2", "to": "g1"})
    view = RegistryView.fold(recs, log.events)
    assert view.tenant_generation("acme") is None, "back on the global live generation: no pin"

    log.add("g2", "promoted")
    view = RegistryView.fold(recs, log.events)
    assert view.live == "g2" and view.previous() == "g1" and view.status("g1") == "previous"

    log.add("g3", "promoted")
    log.add("g2", "rolled_back", **{"from": "g3", "to": "g2"})
    view = RegistryView.fold(recs, log.events)
    assert view.live == "g2" and view.previous() == "g1"

    log.add("g3", "retired")
    view = RegistryView.fold(recs, log.events)
    assert view.status("g3") == "retired" and not view.known("g3") and view.managed("g3")


def test_alias_target_wins_over_event_log() -> None:
    log = Log()
    log.add("g1", "adopted")
    view = RegistryView.fold([record("g1"), record("g2", 1, policy_hash="x")], log.events)
    view.alias_target = "g2"  # the switch happened; the promoted event was never written
    assert view.live == "g2"


def test_global_promotion_clears_tenant_pins_and_its_canary() -> None:
    recs = [record("g1"), record("g2", 1, policy_hash="p2")]
    log = Log()
    log.add("g1", "adopted")
    log.add("g2", "ready")
    log.add("g2", "promoted", tenant="acme")
    log.add("g2", "canary", share=0.5)
    view = RegistryView.fold(recs, log.events)
    assert view.canary == ("g2", 0.5) and view.tenant_generation("acme") == "g2"
    log.add("g2", "promoted")
    view = RegistryView.fold(recs, log.events)
    assert view.canary is None and view.tenant_generation("acme") is None and view.live == "g2"


def test_refused_candidate_status_and_evals_recorded() -> None:
    log = Log()
    log.add("g1", "adopted")
    log.add("g2", "ready")
    log.add("g2", "evaluated", passed=False, results=[{"set": "s", "passed": False}])
    log.add("g2", "refused", reason="recall")
    view = RegistryView.fold([record("g1"), record("g2", 1, policy_hash="p2")], log.events)
    assert view.status("g2") == "refused"
    assert [e["kind"] for e in view.generations["g2"].evals] == ["evaluated", "refused"]


def test_retention_keeps_last_n_and_anything_reachable() -> None:
    recs = [record(f"g{i}", i, policy_hash=f"p{i}") for i in range(1, 7)]
    log = Log()
    for r in recs:
        log.add(r.name, "ready")
    log.add("g1", "adopted")
    log.add("g2", "promoted")
    log.add("g3", "promoted", tenant="acme")
    log.add("g4", "canary", share=0.1)
    view = RegistryView.fold(recs, log.events)
    # newest two (g6, g5) are kept; g2 live, g3 pinned, g4 canary, g1 the rollback target
    assert view.to_retire(2) == []
    log.add("g5", "promoted")  # clears the tenant pin on g3; g2 becomes the rollback target
    view = RegistryView.fold(recs, log.events)
    assert set(view.to_retire(2)) == {"g1", "g3"}


def test_stable_share_is_fixed_per_user_and_uniform() -> None:
    assert stable_share("acme", "alice") == stable_share("acme", "alice")
    assert stable_share("acme", "alice") != stable_share("globex", "alice")
    shares = [stable_share("t", f"user-{i}") for i in range(20_000)]
    inside = sum(s < 0.2 for s in shares) / len(shares)
    assert 0.19 < inside < 0.21


def test_canary_routes_only_its_share_and_never_to_what_is_already_live() -> None:
    log = Log()
    log.add("g1", "adopted")
    log.add("g2", "ready")
    log.add("g2", "canary", share=0.3)
    view = RegistryView.fold([record("g1"), record("g2", 1, policy_hash="p2")], log.events)
    users = [f"u{i}" for i in range(3000)]
    served = [view.canary_for("acme", u) for u in users]
    assert 0.27 < sum(s == "g2" for s in served) / len(users) < 0.33
    assert served == [view.canary_for("acme", u) for u in users], "stable per user"
    log.add("g2", "promoted", tenant="acme")
    view = RegistryView.fold([record("g1"), record("g2", 1, policy_hash="p2")], log.events)
    assert all(view.canary_for("acme", u) is None for u in users[:200])


class FakeCollections:
    def __init__(self, existing: set[str]) -> None:
        self.existing = existing

    def exists(self, name: str) -> bool:
        return name in self.existing


def router(view: RegistryView | None, existing: set[str] = frozenset()) -> GenerationRouter:  # type: ignore[assignment]
    client = SimpleNamespace(collections=FakeCollections(set(existing)))
    return GenerationRouter(client, IndexSettings(generation="g1"), view_loader=lambda: view, ttl_s=0)


def test_router_order_requested_canary_tenant_live_static() -> None:
    static = router(None, {"RagChunks_g9"})
    r = static.resolve("acme", "alice")
    assert (r.generation, r.reason, r.store.chunks_name) == ("g1", "static", "RagChunks_g1")
    assert static.resolve("acme", "alice", "g9").store.chunks_name == "RagChunks_g9"
    with pytest.raises(UnknownGenerationError):
        static.resolve("acme", "alice", "nope")

    log = Log()
    log.add("g1", "adopted")
    log.add("g2", "ready")
    log.add("g3", "ready")
    log.add("g3", "promoted", tenant="globex")
    log.add("g2", "canary", share=1.0)
    view = RegistryView.fold(
        [record("g1"), record("g2", 1, policy_hash="p2"), record("g3", 2, policy_hash="p3")], log.events
    )
    view.alias_target = "g1"
    managed = router(view)
    live = managed.resolve("acme", "alice", "g3")
    assert (live.generation, live.reason) == ("g3", "requested")
    assert managed.resolve("acme", "alice").reason == "canary"
    with pytest.raises(UnknownGenerationError):
        managed.resolve("acme", "alice", "g7")

    log.add("g2", "canary_cleared")
    view = RegistryView.fold(view and [s.record for s in view.generations.values()], log.events)
    view.alias_target = "g1"
    managed = router(view)
    assert managed.resolve("globex", "gina").generation == "g3"
    via_alias = managed.resolve("acme", "alice")
    assert (via_alias.generation, via_alias.reason, via_alias.store.chunks_name) == (
        "g1",
        "live",
        "RagChunks",
    )


def test_unmanaged_configured_generation_stays_static() -> None:
    """A test's private generation is not in the shared registry: it must not follow the shared alias."""
    log = Log()
    log.add("g0001", "adopted")
    view = RegistryView.fold([record("g0001")], log.events)
    view.alias_target = "g0001"
    r = router(view).resolve("acme", "alice")
    assert (r.generation, r.reason) == ("g1", "static")
