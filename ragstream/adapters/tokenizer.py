"""The embedding model's own tokenizer (a `tokenizers` fast tokenizer read from its tokenizer.json)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from ragstream.adapters.embedder import packaged_model_path


class HFTokenizer:
    """A `tokenizers` fast tokenizer from a local tokenizer.json (default: the packaged MiniLM model)."""

    def __init__(self, path: str | Path | None = None) -> None:
        from tokenizers import Tokenizer as _Tok

        if path is None:
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


@cache
def default_tokenizer() -> HFTokenizer:
    return HFTokenizer()
