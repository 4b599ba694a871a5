"""The generation record (immutable, content-addressed) and the registry's view of all generations.

A record describes what an index build is made of: the source snapshot (end offsets of the compacted
source-change topic when the build started), the normalizer version, the chunking policy, the embedding model
and revision, and the collections it lives in. Its id is the sha256 of that content, so the same inputs name
the same generation. Nothing in a record ever changes: what happens to a generation afterwards (ready,
evaluated, promoted, rolled back, retired, canary) is an append-only event. The view folds records and events
into the current state; it is pure, so routing and the CLI agree on it and it is unit-tested.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from schemas.envelope import utcnow

EventKind = Literal[
    "adopted",  # an existing (pre-registry) generation taken under management as the live one
    "ready",  # the build's consumer group reached lag zero
    "evaluated",  # the promotion gate ran; data: {"passed": bool, "results": [...]}
    "refused",  # promotion refused by the gate
    "promoted",  # live for everyone (tenant None) or for one tenant
    "rolled_back",  # data: {"from": name, "to": name}
    "retired",  # collections deleted; the record stays
    "canary",  # data: {"share": float}
    "canary_cleared",
    "backup",  # data: {"backup_id": ..., "aliases": {...}}
]


_LAST_SEQ = 0


class SourceSnapshot(BaseModel):
    """Where the build's replay of the compacted source topic ends at the start: partition -> end offset."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    topic: str
    offsets: dict[int, int]


class GenerationSpec(BaseModel):
    """The content of a generation; its sha256 is the generation id."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    index: str
    source: SourceSnapshot | None = None  # None: adopted, built before the registry existed
    normalizer_version: str
    chunking_policy: dict[str, Any]
    policy_hash: str
    embedding_model: str
    embedding_revision: str
    embedding_dimensions: int = 0
    parent: str | None = None  # the live generation when this one was built

    def content_id(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class EmbeddingBackendInfo(BaseModel):
    """The embedding backend that built a generation. Not part of its content id: backends of one
    compatibility class (`compat`, also named by the spec's embedding revision) make interchangeable
    vectors, so the same inputs are the same generation whichever of them ran; a backend of another class
    has another revision, hence another generation."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    backend: str  # torch-fp32 | torch-bf16 | onnx-fp32 | onnx-int8 | auto (adopted before any model loaded)
    compat: str  # fp32 | int8
    chosen_by: str = "configured"  # auto (the start-up probe) | configured | none (no backend: test model)
    reason: str = ""
    cpu_flags: tuple[str, ...] = ()
    probe: tuple[dict[str, Any], ...] = ()  # the probe's figures per backend when `auto` chose


class GenerationRecord(BaseModel):
    """One immutable generation: its content id, name, collections and creation time."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    generation_id: str
    name: str
    spec: GenerationSpec
    chunks_collection: str
    documents_collection: str
    created_at: datetime
    embedding_backend: EmbeddingBackendInfo | None = None  # None: a record written before it was kept

    def verify(self) -> None:
        """Raise if the record's id is not the hash of its content (tampered or corrupt)."""
        if self.spec.content_id() != self.generation_id:
            raise ValueError(f"generation {self.name}: id does not match its content")


class GenerationEvent(BaseModel):
    """Something that happened to a generation; append-only, ordered by `seq`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_id: str
    generation: str
    kind: EventKind
    tenant: str | None = None
    at: datetime
    seq: int
    data: dict[str, Any] = {}

    @classmethod
    def new(
        cls,
        generation: str,
        kind: EventKind,
        *,
        tenant: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> GenerationEvent:
        global _LAST_SEQ
        now = utcnow()
        # Microseconds, strictly increasing within a process (two events in one microsecond keep order).
        _LAST_SEQ = max(int(now.timestamp() * 1_000_000), _LAST_SEQ + 1)
        return cls(
            event_id=str(uuid.uuid4()),
            generation=generation,
            kind=kind,
            tenant=tenant,
            at=now,
            seq=_LAST_SEQ,
            data=data or {},
        )


def default_name(generation_id: str) -> str:
    """A content-addressed, collection-safe name: `g` + the first 10 hex digits of the id."""
    return f"g{generation_id[:10]}"


def stable_share(tenant: str, subject: str) -> float:
    """A user's fixed point in [0, 1): the same user always lands on the same side of a canary split."""
    digest = hashlib.sha256(f"{tenant}\x00{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class GenerationState:
    """A record plus what its events say about it now."""

    record: GenerationRecord
    ready_at: datetime | None = None
    ready: dict[str, Any] = field(default_factory=dict)
    promoted_at: datetime | None = None
    retired_at: datetime | None = None
    evals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def last_eval(self) -> dict[str, Any] | None:
        return self.evals[-1] if self.evals else None


@dataclass
class RegistryView:
    """Every generation of one index, folded from records and events (oldest event first)."""

    generations: dict[str, GenerationState] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # global live stack: last = live
    tenant_history: dict[str, list[str]] = field(default_factory=dict)
    canary: tuple[str, float] | None = None
    alias_target: str | None = None  # the generation the live alias points at (the server's truth)
    backups: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def fold(cls, records: Iterable[GenerationRecord], events: Iterable[GenerationEvent]) -> RegistryView:
        view = cls()
        for r in sorted(records, key=lambda r: r.created_at):
            view.generations[r.name] = GenerationState(r)
        for ev in sorted(events, key=lambda e: (e.seq, e.event_id)):
            view._apply(ev)
        return view

    def _apply(self, ev: GenerationEvent) -> None:
        st = self.generations.get(ev.generation)
        if ev.kind == "backup":
            self.backups.append({**ev.data, "at": ev.at.isoformat()})
            return
        if st is None:
            return  # an event about a record this view does not hold (never written, or foreign)
        if ev.kind == "ready":
            st.ready_at, st.ready = ev.at, dict(ev.data)
        elif ev.kind in ("evaluated", "refused"):
            st.evals.append({**ev.data, "kind": ev.kind, "at": ev.at.isoformat(), "tenant": ev.tenant})
        elif ev.kind in ("promoted", "adopted"):
            st.promoted_at = st.promoted_at or ev.at
            if ev.tenant is None:
                if not self.history or self.history[-1] != ev.generation:
                    self.history.append(ev.generation)
                self.tenant_history.clear()  # everyone moves to the new live generation
                if self.canary and self.canary[0] == ev.generation:
                    self.canary = None
            else:
                stack = self.tenant_history.setdefault(ev.tenant, [])
                if not stack or stack[-1] != ev.generation:
                    stack.append(ev.generation)
        elif ev.kind == "rolled_back":
            stack = self.history if ev.tenant is None else self.tenant_history.setdefault(ev.tenant, [])
            if stack and stack[-1] == ev.data.get("from"):
                stack.pop()
            to = ev.data.get("to")
            if to and (not stack or stack[-1] != to):
                stack.append(to)
            if ev.tenant is not None and stack and stack[-1] == self.live:
                stack.clear()  # back on the global live generation: no pin left
        elif ev.kind == "retired":
            st.retired_at = ev.at
        elif ev.kind == "canary":
            self.canary = (ev.generation, float(ev.data.get("share", 0.0)))
        elif ev.kind == "canary_cleared" and self.canary and self.canary[0] == ev.generation:
            self.canary = None

    # --- questions routing and the CLI ask ---------------------------------------------------------
    @property
    def live(self) -> str | None:
        """The generation everyone is served from (the alias wins over the event log if they differ)."""
        return self.alias_target or (self.history[-1] if self.history else None)

    def managed(self, name: str) -> bool:
        return name in self.generations

    def known(self, name: str) -> bool:
        st = self.generations.get(name)
        return st is not None and st.retired_at is None

    def tenant_generation(self, tenant: str) -> str | None:
        stack = self.tenant_history.get(tenant)
        return stack[-1] if stack else None

    def canary_for(self, tenant: str, subject: str) -> str | None:
        if self.canary is None:
            return None
        name, share = self.canary
        if not self.known(name) or name == (self.tenant_generation(tenant) or self.live):
            return None
        return name if stable_share(tenant, subject) < share else None

    def previous(self, tenant: str | None = None) -> str | None:
        """The rollback target: the generation live before the current one (globally or for a tenant)."""
        if tenant is not None:
            stack = self.tenant_history.get(tenant) or []
            if not stack:
                return None
            return stack[-2] if len(stack) > 1 else self.live
        for name in reversed(self.history[:-1]):
            if self.known(name) and name != self.live:
                return name
        return None

    def in_use(self) -> set[str]:
        """Generations readers may reach now: live, tenant pins, canary."""
        used = {self.live} if self.live else set()
        used |= {s[-1] for s in self.tenant_history.values() if s}
        if self.canary:
            used.add(self.canary[0])
        return used

    def status(self, name: str) -> str:
        st = self.generations[name]
        if st.retired_at is not None:
            return "retired"
        if name == self.live:
            return "live"
        if any(s and s[-1] == name for s in self.tenant_history.values()):
            return "live-for-tenants"
        if self.canary and self.canary[0] == name:
            return "canary"
        if st.last_eval is not None and st.last_eval.get("kind") == "refused":
            return "refused"
        if st.promoted_at is not None:
            return "previous"
        return "ready" if st.ready_at is not None else "building"

    def to_retire(self, keep_last: int) -> list[str]:
        """Generations beyond the last `keep_last` (newest first by creation) that no reader can reach."""
        alive = [s for s in self.generations.values() if s.retired_at is None]
        alive.sort(key=lambda s: s.record.created_at, reverse=True)
        used = self.in_use()
        rollback = {self.previous()} - {None}
        keep = {s.name for s in alive[: max(keep_last, 1)]} | used | rollback
        return [s.name for s in alive if s.name not in keep and s.ready_at is not None]

    def summary(self, name: str) -> dict[str, Any]:
        st = self.generations[name]
        rec = st.record
        return {
            "name": name,
            "generation_id": rec.generation_id,
            "status": self.status(name),
            "collection": rec.chunks_collection,
            "documents_collection": rec.documents_collection,
            "normalizer_version": rec.spec.normalizer_version,
            "policy_hash": rec.spec.policy_hash,
            "chunking_policy": rec.spec.chunking_policy,
            "embedding_model": rec.spec.embedding_model,
            "embedding_revision": rec.spec.embedding_revision,
            "embedding_backend": rec.embedding_backend.model_dump(mode="json")
            if rec.embedding_backend
            else None,
            "source_offsets": rec.spec.source.offsets if rec.spec.source else None,
            "parent": rec.spec.parent,
            "created_at": rec.created_at.isoformat(),
            "ready_at": st.ready_at.isoformat() if st.ready_at else None,
            "promoted_at": st.promoted_at.isoformat() if st.promoted_at else None,
            "retired_at": st.retired_at.isoformat() if st.retired_at else None,
            "tenants": sorted(t for t, s in self.tenant_history.items() if s and s[-1] == name),
            "build": st.ready,
            "evals": st.evals,
        }
