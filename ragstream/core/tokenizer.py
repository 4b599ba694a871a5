"""Tokenizers for chunk sizing: counted in the embedding model's own word pieces."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Protocol


class Tokenizer(Protocol):
    name: str

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token (no special tokens)."""
        ...

    def count(self, text: str) -> int: ...


class HFTokenizer:
    """A `tokenizers` fast tokenizer from a local tokenizer.json (default: the packaged MiniLM model)."""

    def __init__(self, path: str | Path | None = None) -> None:
        from tokenizers import Tokenizer as _Tok

        if path is None:
            from ragstream.adapters.embedder import packaged_model_path

            path = packaged_model_path()
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        self._tok = _Tok.from_file(str(file))
        self._tok.no_truncation()
        self._tok.no_padding()
        self.name = f"hf:{file.parent.name}"

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self._tok.encode(text, add_special_tokens=False).offsets)

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)


_WORD = re.compile(r"\S+")


class WhitespaceTokenizer:
    """One token per whitespace-separated word: fast, for unit tests."""

    name = "whitespace"

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def count(self, text: str) -> int:
        return len(_WORD.findall(text))


@cache
def default_tokenizer() -> HFTokenizer:
    return HFTokenizer()
