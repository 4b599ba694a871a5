"""Model ports: embedding, reranking and chat completion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """Unit-normalized vectors (cosine = dot), one row per text."""

    model_id: str
    revision: str
    dimensions: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


class Reranker(Protocol):
    name: str

    def score(self, query: str, texts: list[str]) -> list[float]:
        """One relevance score per text, higher is better."""
        ...


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ModelStreamIncompleteError(Exception):
    """The model server's stream ended before its terminating event: a failure, never a short answer."""


class ChatModel(Protocol):
    model: str

    def stream(self, messages: list[dict[str, str]], max_tokens: int, usage: Usage) -> AsyncIterator[str]:
        """The completion's text in deltas; fills `usage` when the server reports it. A stream that ends
        without its terminating event raises ModelStreamIncompleteError."""
        ...
