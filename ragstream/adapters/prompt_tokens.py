"""Prompt token counting with the serving model's own tokenizer (the core's `TokenCounter` callable).

`llm.tokenizer` picks it: `auto` (the local model server's GGUF when it is the model served, else the
approximation), `gguf:<path>` (llama.cpp loads the vocabulary only, no weights), `json:<path>` (a Hugging
Face `tokenizer.json`, for a remote model whose tokenizer is published), or `approx`. The approximation is
only the fallback; every prompt it counts is counted on a warning metric.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from prometheus_client import Counter

from ragstream.core.prompt import approx_tokens
from ragstream.settings import Settings

log = logging.getLogger(__name__)
APPROXIMATED = Counter(
    "ragstream_prompt_tokens_approximated",
    "Texts whose prompt tokens were estimated (no tokenizer for the serving model)",
)


class GGUFTokenCounter:
    """The GGUF's tokenizer through llama-cpp-python (`vocab_only`: the vocabulary, not the weights)."""

    def __init__(self, path: Path) -> None:
        from llama_cpp import Llama

        self.name = f"gguf:{path.name}"
        self._llm = Llama(model_path=str(path), vocab_only=True, verbose=False)

    def __call__(self, text: str) -> int:
        # No BOS and no special-token parsing: a passage that spells "<|im_end|>" is text, counted as such.
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


class JsonTokenCounter:
    """A Hugging Face `tokenizer.json` (the `tokenizers` library, already a dependency)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.name = f"json:{path.name}"
        self._tok = Tokenizer.from_file(str(path))

    def __call__(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)


class ApproxTokenCounter:
    """~3.5 characters per token, counted on `ragstream_prompt_tokens_approximated`."""

    name = "approx"

    def __call__(self, text: str) -> int:
        APPROXIMATED.inc()
        return approx_tokens(text)


def local_gguf(settings: Settings) -> Path | None:
    """The GGUF the local model server serves, when it is the configured model and on disk."""
    if settings.llm.local_model == "none":
        return None
    path = settings.stack.cache_dir / "models" / f"{settings.llm.local_model}.gguf"
    return path if path.is_file() else None


def token_counter(settings: Settings) -> Callable[[str], int]:
    """The counter `llm.tokenizer` names; the approximation (with a warning) when it cannot be loaded."""
    spec = settings.llm.tokenizer
    kind, _, target = spec.partition(":")
    try:
        if kind == "gguf":
            return GGUFTokenCounter(Path(target))
        if kind == "json":
            return JsonTokenCounter(Path(target))
        if kind == "auto":
            gguf = local_gguf(settings)
            if gguf is not None and settings.llm.base_url.startswith(
                f"http://127.0.0.1:{settings.llm.local_port}"
            ):
                return GGUFTokenCounter(gguf)
        elif kind != "approx":
            raise ValueError(f"unknown llm.tokenizer {spec!r}: use auto, gguf:<path>, json:<path>, approx")
    except (ImportError, OSError, RuntimeError, ValueError) as exc:
        if isinstance(exc, ValueError) and "unknown llm.tokenizer" in str(exc):
            raise
        log.warning("tokenizer %s could not be loaded (%s): prompt tokens are approximated", spec, exc)
    else:
        if kind in ("auto", "approx"):
            log.warning("no tokenizer for model %s: prompt tokens are approximated", settings.llm.model)
    return ApproxTokenCounter()
