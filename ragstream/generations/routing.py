"""Which generation serves a query, and the store that reads it.

Order: the query's explicit `generation` (eval runs, comparisons) > the canary share (stable per user) >
the tenant's own promotion > the live alias. An index whose configured generation is not managed by the
registry (no registry, or a test's private generation) is read statically from settings, as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ragstream import names
from ragstream.adapters.store import WeaviateStore
from ragstream.ports import ChunkStore
from ragstream.settings import IndexSettings


class UnknownGenerationError(ValueError):
    """A query named a generation this index does not have (the caller's mistake: answered, not retried)."""


@dataclass(frozen=True)
class Route:
    """Where one query reads: `store` (possibly an alias), the generation it names, and why."""

    store: ChunkStore
    generation: str
    reason: str  # requested | canary | tenant | live | static


ViewLoader = Callable[[], Any]


class GenerationRouter:
    """Resolves a query to a generation; stores per generation are created once and cached."""

    def __init__(
        self,
        client: Any,
        index: IndexSettings,
        *,
        default: ChunkStore | None = None,
        view_loader: ViewLoader | None = None,
        ttl_s: float = 1.0,
    ) -> None:
        self.client = client
        self.index = index
        self._stores: dict[str, ChunkStore] = {}
        self._lock = threading.Lock()
        if default is not None:
            self._stores[index.generation] = default
        self._view_loader = view_loader
        self._ttl_s = ttl_s
        self._view: Any = None
        self._view_at = float("-inf")

    def store(self, generation: str) -> ChunkStore:
        """The store of one concrete generation (its chunks and document-state collections)."""
        with self._lock:
            found = self._stores.get(generation)
            if found is None:
                found = WeaviateStore(self.client, *names.collections(self.index, generation))
                self._stores[generation] = found
            return found

    def alias_store(self) -> ChunkStore:
        """A store that searches through the live alias (the switch is atomic on the server)."""
        key = "\x00alias"
        with self._lock:
            found = self._stores.get(key)
            if found is None:
                found = WeaviateStore(self.client, names.live_alias(self.index), "")
                self._stores[key] = found
            return found

    def view(self) -> Any:
        """The registry's view (cached for `ttl_s`); None when the index is not registry-managed."""
        if self._view_loader is None:
            return None
        now = time.monotonic()
        if now - self._view_at > self._ttl_s:
            try:
                self._view = self._view_loader()
            except Exception:  # the registry unreachable: keep serving from the last known view
                if self._view_at == float("-inf"):
                    raise
            self._view_at = now
        return self._view

    def embedding_of(self, generation: str) -> tuple[str, str] | None:
        """(model, revision) the recorded generation's vectors were made with; None when the generation
        is not in the registry (static routing, or a test's private generation)."""
        view = self.view()
        state = view.generations.get(generation) if view is not None else None
        if state is None:
            return None
        return state.record.spec.embedding_model, state.record.spec.embedding_revision

    def invalidate(self) -> None:
        self._view_at = float("-inf")

    def resolve(self, tenant: str, subject: str, requested: str | None = None) -> Route:
        if requested:
            view = self.view()
            if view is not None and view.managed(self.index.generation):
                if not view.known(requested):
                    raise UnknownGenerationError(f"unknown index generation {requested!r}")
            elif requested != self.index.generation and not self.client.collections.exists(
                names.chunks_collection(self.index, requested)
            ):
                raise UnknownGenerationError(f"unknown index generation {requested!r}")
            return Route(self.store(requested), requested, "requested")
        view = self.view()
        if view is None or not view.managed(self.index.generation):
            return Route(self.store(self.index.generation), self.index.generation, "static")
        canary = view.canary_for(tenant, subject)
        if canary is not None:
            return Route(self.store(canary), canary, "canary")
        pinned = view.tenant_generation(tenant)
        if pinned is not None:
            return Route(self.store(pinned), pinned, "tenant")
        live = view.live or self.index.generation
        if view.alias_target is not None:
            return Route(self.alias_store(), live, "live")
        return Route(self.store(live), live, "live")
