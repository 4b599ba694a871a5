"""Serving consumers are wired here once they land (retrieval, rerank, generation)."""

from __future__ import annotations

from typing import Any

from ragstream.settings import Settings


def build_serving(name: str, settings: Settings, **overrides: Any) -> Any:
    raise NotImplementedError(f"consumer {name!r} is not implemented yet")
