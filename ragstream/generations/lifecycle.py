"""Promotion (eval-gated, atomic alias switch, per tenant), one-step rollback, retirement, canary.

Every operation appends an event to the registry; promotion and rollback of the whole index move the live
alias (one schema operation: every query after it reads the new collection, none fails or sees a half
switch, because both collections are complete). Per-tenant promotion pins one tenant to a generation in
the registry; serving processes pick it up within `generations.routing_ttl_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from ragstream.generations.gate import EvalOutcome, Gate
from ragstream.generations.record import GenerationEvent, RegistryView
from ragstream.generations.registry import Registry
from ragstream.indexing.builder import builder_group
from ragstream.runtime.kafka import admin as kafka_admin
from ragstream.settings import Settings


class LifecycleError(RuntimeError):
    """An operation that cannot be done in the registry's current state."""


class PromotionRefusedError(LifecycleError):
    """The gate refused the candidate; `outcomes` says which set missed which threshold."""

    def __init__(self, message: str, outcomes: list[EvalOutcome]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


@dataclass
class Lifecycle:
    settings: Settings
    registry: Registry
    gate: Gate | None = None

    def _view(self) -> RegistryView:
        return self.registry.view()

    def _require(self, view: RegistryView, name: str) -> None:
        if not view.managed(name):
            raise LifecycleError(f"unknown generation {name!r}")
        st = view.generations[name]
        if st.retired_at is not None:
            raise LifecycleError(f"generation {name} is retired")
        if st.ready_at is None:
            raise LifecycleError(f"generation {name} is not ready (its build has not reached lag zero)")

    async def evaluate(self, name: str, *, tenant: str | None = None) -> list[EvalOutcome]:
        """Run the gate on `name` and record the results on it (whether or not a promotion follows)."""
        gate = self.gate or Gate(self.settings.generations.eval_sets)
        outcomes = await gate.run(self.settings, name)
        passed = bool(outcomes) and all(o.passed for o in outcomes)
        await asyncio.to_thread(
            self.registry.append,
            GenerationEvent.new(
                name,
                "evaluated",
                tenant=tenant,
                data={"passed": passed, "results": [o.model_dump(mode="json") for o in outcomes]},
            ),
        )
        return outcomes

    async def promote(self, name: str, *, tenant: str | None = None, force: bool = False) -> dict[str, Any]:
        """Gate, then switch readers (the alias, or one tenant's pin), then retire beyond `keep_last`."""
        view = await asyncio.to_thread(self._view)
        self._require(view, name)
        current = view.tenant_generation(tenant) or view.live if tenant else view.live
        if current == name:
            raise LifecycleError(f"generation {name} is already live" + (f" for {tenant}" if tenant else ""))
        outcomes = await self.evaluate(name, tenant=tenant)
        passed = bool(outcomes) and all(o.passed for o in outcomes)
        if not passed and not force:
            why = (
                "no evaluation sets configured (generations.eval_sets)"
                if not outcomes
                else "; ".join(f"{o.set}: {o.metrics}" for o in outcomes if not o.passed)
            )
            await asyncio.to_thread(
                self.registry.append,
                GenerationEvent.new(
                    name,
                    "refused",
                    tenant=tenant,
                    data={"reason": why, "results": [o.model_dump(mode="json") for o in outcomes]},
                ),
            )
            raise PromotionRefusedError(f"promotion of {name} refused: {why}", outcomes)
        record = view.generations[name].record
        if tenant is None:
            await asyncio.to_thread(self.registry.point_alias, record.chunks_collection)
        await asyncio.to_thread(
            self.registry.append,
            GenerationEvent.new(
                name, "promoted", tenant=tenant, data={"from": current, "forced": force and not passed}
            ),
        )
        retired = await self.enforce_retention()
        return {
            "promoted": name,
            "tenant": tenant,
            "from": current,
            "passed": passed,
            "forced": force and not passed,
            "evals": [o.model_dump(mode="json") for o in outcomes],
            "retired": retired,
        }

    async def rollback(self, *, tenant: str | None = None) -> dict[str, Any]:
        """Return to the previous generation in one step (no gate: it was live before)."""
        view = await asyncio.to_thread(self._view)
        current = view.tenant_generation(tenant) if tenant else view.live
        target = view.previous(tenant)
        if current is None or target is None:
            raise LifecycleError("nothing to roll back to" + (f" for tenant {tenant}" if tenant else ""))
        if tenant is None:
            await asyncio.to_thread(
                self.registry.point_alias, view.generations[target].record.chunks_collection
            )
        await asyncio.to_thread(
            self.registry.append,
            GenerationEvent.new(target, "rolled_back", tenant=tenant, data={"from": current, "to": target}),
        )
        return {"rolled_back": current, "to": target, "tenant": tenant}

    async def retire(self, name: str, *, force: bool = False) -> dict[str, Any]:
        """Delete a generation's collections (its record stays); never one that readers can reach."""
        view = await asyncio.to_thread(self._view)
        if not view.managed(name):
            raise LifecycleError(f"unknown generation {name!r}")
        if view.generations[name].retired_at is not None:
            return {"retired": name, "already": True}
        if name in view.in_use():
            raise LifecycleError(f"generation {name} is serving queries ({view.status(name)}); not retired")
        if name == view.previous() and not force:
            raise LifecycleError(f"generation {name} is the rollback target; --force to retire it anyway")
        record = view.generations[name].record
        for coll in (record.chunks_collection, record.documents_collection):
            await asyncio.to_thread(self.registry.client.collections.delete, coll)
        await self._drop_group(builder_group(name))
        await asyncio.to_thread(self.registry.append, GenerationEvent.new(name, "retired"))
        return {"retired": name}

    async def enforce_retention(self) -> list[str]:
        """Retire what is beyond the last `keep_last` generations and unreachable by readers."""
        view = await asyncio.to_thread(self._view)
        out = []
        for name in view.to_retire(self.settings.generations.keep_last):
            await self.retire(name, force=True)
            out.append(name)
        return out

    async def canary(self, name: str, share: float | None = None) -> dict[str, Any]:
        """Serve `share` of users (stable per user) from `name`; signals are reported per generation."""
        view = await asyncio.to_thread(self._view)
        self._require(view, name)
        share = self.settings.generations.canary_share if share is None else share
        if not 0.0 <= share <= 1.0:
            raise LifecycleError("canary share must be between 0 and 1")
        await asyncio.to_thread(
            self.registry.append, GenerationEvent.new(name, "canary", data={"share": share})
        )
        return {"canary": name, "share": share}

    async def canary_off(self) -> dict[str, Any]:
        view = await asyncio.to_thread(self._view)
        if view.canary is None:
            return {"canary": None}
        name = view.canary[0]
        await asyncio.to_thread(self.registry.append, GenerationEvent.new(name, "canary_cleared"))
        return {"canary": None, "cleared": name}

    async def _drop_group(self, group: str) -> None:
        kafka = self.settings.kafka
        admin = kafka_admin(kafka, client_id=f"{kafka.client_id}-gc")
        with contextlib.suppress(Exception):
            await admin.start()
            try:
                await admin.delete_consumer_groups([group])
            finally:
                await admin.close()
