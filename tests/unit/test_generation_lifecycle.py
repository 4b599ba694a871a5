"""Promotion gate, alias switch, rollback, retention (in-memory registry); the plan's pure part."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest

from ragstream.adapters.embedder import HashEmbedder
from ragstream.core.chunk import ChunkingPolicy
from ragstream.core.tokenizer import WhitespaceTokenizer
from ragstream.generations.gate import EvalOutcome, Gate
from ragstream.generations.lifecycle import Lifecycle, LifecycleError, PromotionRefusedError
from ragstream.generations.plan import plan_events
from ragstream.generations.record import GenerationEvent, GenerationRecord, GenerationSpec, RegistryView
from ragstream.settings import Settings
from schemas.envelope import utcnow
from schemas.ingestion import Acl, AclChanged, DocumentChanged

pytestmark = pytest.mark.unit


class FakeCollections:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, name: str) -> None:
        self.deleted.append(name)


class FakeRegistry:
    """The Registry surface Lifecycle uses, in memory."""

    def __init__(self, names: list[str]) -> None:
        self.client = type("C", (), {"collections": FakeCollections()})()
        self.records = []
        for i, n in enumerate(names):
            spec = GenerationSpec(
                index="RagChunks",
                normalizer_version="n",
                chunking_policy={},
                policy_hash=f"p{i}",
                embedding_model="m",
                embedding_revision="r",
            )
            self.records.append(
                GenerationRecord(
                    generation_id=spec.content_id(),
                    name=n,
                    spec=spec,
                    chunks_collection=f"RagChunks_{n}",
                    documents_collection=f"RagDocuments_{n}",
                    created_at=utcnow() + timedelta(seconds=i),
                )
            )
        self.events: list[GenerationEvent] = []
        self.alias: str | None = None
        self.alias_moves: list[str] = []

    def append(self, ev: GenerationEvent) -> GenerationEvent:
        ev = ev.model_copy(update={"seq": len(self.events)})
        self.events.append(ev)
        return ev

    def view(self) -> RegistryView:
        v = RegistryView.fold(self.records, self.events)
        v.alias_target = self.alias.removeprefix("RagChunks_") if self.alias else None
        return v

    def point_alias(self, collection: str) -> None:
        self.alias = collection
        self.alias_moves.append(collection)


def gate(passed: dict[str, bool]) -> Gate:
    async def evaluator(settings: Settings, path: str, generation: str) -> EvalOutcome:
        ok = passed[generation]
        return EvalOutcome(set=path, evaluator="fake", passed=ok, metrics={"recall@5": 1.0 if ok else 0.1})

    return Gate(("set.json",), runner=evaluator)


@pytest.fixture
def reg(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    async def no_group(self: Lifecycle, group: str) -> None:
        return None

    monkeypatch.setattr(Lifecycle, "_drop_group", no_group)
    r = FakeRegistry(["g1", "g2", "g3", "g4"])
    for n in ("g1", "g2", "g3", "g4"):
        r.append(GenerationEvent.new(n, "ready"))
    r.append(GenerationEvent.new("g1", "adopted"))
    r.alias = "RagChunks_g1"
    return r


async def test_gate_refuses_degraded_candidate_and_keeps_readers(reg: FakeRegistry) -> None:
    lc = Lifecycle(Settings(), reg, gate({"g2": False}))  # type: ignore[arg-type]
    with pytest.raises(PromotionRefusedError) as info:
        await lc.promote("g2")
    assert info.value.outcomes[0].metrics["recall@5"] == 0.1
    assert reg.alias == "RagChunks_g1" and reg.alias_moves == []
    kinds = [e.kind for e in reg.events if e.generation == "g2"]
    assert kinds[-2:] == ["evaluated", "refused"]
    assert reg.view().status("g2") == "refused"


async def test_no_configured_sets_refuses_unless_forced(reg: FakeRegistry) -> None:
    lc = Lifecycle(Settings(), reg, Gate(()))  # type: ignore[arg-type]
    with pytest.raises(PromotionRefusedError, match="no evaluation sets"):
        await lc.promote("g2")
    out = await lc.promote("g2", force=True)
    assert out["forced"] is True and reg.alias == "RagChunks_g2"


async def test_promote_switches_alias_then_rollback_in_one_step(reg: FakeRegistry) -> None:
    lc = Lifecycle(Settings(), reg, gate({"g2": True, "g3": True}))  # type: ignore[arg-type]
    out = await lc.promote("g2")
    assert out["from"] == "g1" and reg.alias == "RagChunks_g2" and reg.view().live == "g2"
    assert reg.view().generations["g2"].evals[-1]["passed"] is True
    back = await lc.rollback()
    assert back == {"rolled_back": "g2", "to": "g1", "tenant": None}
    assert reg.alias == "RagChunks_g1" and reg.alias_moves == ["RagChunks_g2", "RagChunks_g1"]
    with pytest.raises(LifecycleError, match="already live"):
        await lc.promote("g1")


async def test_per_tenant_promotion_leaves_alias(reg: FakeRegistry) -> None:
    lc = Lifecycle(Settings(), reg, gate({"g3": True}))  # type: ignore[arg-type]
    await lc.promote("g3", tenant="acme")
    view = reg.view()
    assert reg.alias_moves == [] and view.tenant_generation("acme") == "g3" and view.live == "g1"
    await lc.rollback(tenant="acme")
    assert reg.view().tenant_generation("acme") is None


async def test_retire_refuses_serving_generations_and_retention_runs(reg: FakeRegistry) -> None:
    s = Settings().model_copy(
        update={"generations": Settings().generations.model_copy(update={"keep_last": 2})}
    )
    lc = Lifecycle(s, reg, gate({"g2": True, "g3": True, "g4": True}))  # type: ignore[arg-type]
    with pytest.raises(LifecycleError, match="serving"):
        await lc.retire("g1")
    await lc.promote("g4")
    # keep the newest two (g4, g3), plus g1 as the rollback target; g2 goes
    assert reg.client.collections.deleted == ["RagChunks_g2", "RagDocuments_g2"]
    assert reg.view().status("g2") == "retired"
    with pytest.raises(LifecycleError, match="retired"):
        await lc.promote("g2")


def _changed(tenant: str, doc: str, text: str) -> DocumentChanged:
    return DocumentChanged(
        tenant_id=tenant,
        op="upsert",
        document_id=doc,
        content_b64=base64.b64encode(text.encode()).decode(),
        acl=Acl(groups=("everyone",)),
        producer="test",
    )


def test_plan_counts_what_the_builder_would_embed() -> None:
    words = " ".join(f"word{i}." for i in range(120))
    events: list[Any] = [
        _changed("acme", "a", words),
        _changed("acme", "b", "short text here."),
        _changed("acme", "a", words),  # same content again: the indexer's no-op
        _changed("globex", "c", words),
        DocumentChanged(tenant_id="globex", op="delete", document_id="c", producer="test"),
        AclChanged(tenant_id="acme", document_id="b", acl=Acl(groups=("x",)), producer="test"),
    ]
    policy = ChunkingPolicy(max_tokens=50, overlap_tokens=0, min_chunk_tokens=0)
    p = plan_events(Settings(), events, policy, WhitespaceTokenizer(), HashEmbedder(16))
    out = p.to_json()
    acme, globex = out["tenants"]["acme"], out["tenants"]["globex"]
    assert (acme["documents"], acme["skipped_unchanged"]) == (2, 1)
    assert acme["tokens_to_embed"] == 123 and acme["tokens"] == 123
    assert (globex["documents"], globex["chunks"], globex["tokens_to_embed"]) == (0, 0, 120)
    assert out["tokens_to_embed"] == 243 and out["throughput_tokens_per_s"] > 0
    assert out["estimated_seconds"] > 0 and out["estimated_storage_bytes"] > 0
