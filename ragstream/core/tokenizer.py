"""The tokenizer port for chunk sizing (counted in the embedding model's own word pieces), and a pure
whitespace tokenizer for unit tests. The model's tokenizer is `ragstream.adapters.tokenizer.HFTokenizer`."""

from __future__ import annotations

import re
from typing import Protocol


class Tokenizer(Protocol):
    name: str

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token (no special tokens)."""
        ...

    def count(self, text: str) -> int: ...


_WORD = re.compile(r"\S+")


class WhitespaceTokenizer:
    """One token per whitespace-separated word: fast, for unit tests."""

    name = "whitespace"

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def count(self, text: str) -> int:
        return len(_WORD.findall(text))
