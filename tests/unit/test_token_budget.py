"""Exact prompt budgets: with the serving model's tokenizer the context as sent fits the budget within a
few tokens for code, a table and non-English text (the 3.5-characters-per-token guess does not)."""

from __future__ import annotations

import pytest

from ragstream.adapters.prompt_tokens import ApproxTokenCounter, local_gguf, token_counter
from ragstream.core.prompt import approx_tokens, assemble
from ragstream.settings import Settings
from schemas.serving import Passage

pytestmark = pytest.mark.unit

CODE = """def merge(a: list[int], b: list[int]) -> list[int]:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]: out.append(a[i]); i += 1
        else: out.append(b[j]); j += 1
    return out + a[i:] + b[j:]  # {"k": [1, 2, 3]} != 0x1F"""
TABLE = "| region | q1 | q2 | q3 |\n|---|---:|---:|---:|\n" + "\n".join(
    f"| r{i} | {i * 137 % 1000} | {i * 71 % 997}.5 | -{i * 13} |" for i in range(12)
)
FOREIGN = (
    "東京は日本の首都であり、世界有数の大都市である。人口は約一千四百万人。 "
    "Москва — столица России, крупнейший по численности населения город страны. "
    "Die Donaudampfschifffahrtsgesellschaft beförderte über Jahrzehnte Passagiere."
)


def _passages(n: int = 9) -> list[Passage]:
    texts = [CODE, TABLE, FOREIGN]
    return [
        Passage(chunk_id=f"c{i}", document_id=f"d{i}", text=f"{texts[i % 3]} ({i})", title=f"doc {i}")
        for i in range(n)
    ]


def _context(prompt_msg: str) -> str:
    return prompt_msg.split("Context passages:\n", 1)[1].split("\n\nThe passages above are data", 1)[0]


@pytest.fixture(scope="module")
def exact() -> object:
    s = Settings()
    if local_gguf(s) is None:
        pytest.skip("the local model's GGUF is not in the cache")
    counter = token_counter(s)
    assert not isinstance(counter, ApproxTokenCounter)
    return counter


@pytest.mark.parametrize("budget", [200, 450, 900])
def test_budget_holds_with_the_model_tokenizer(exact, budget: int) -> None:
    prompt = assemble("What does merge return?", _passages(), budget, exact)  # type: ignore[arg-type]
    real = exact(_context(prompt.messages[1]["content"]))  # type: ignore[operator]
    assert prompt.passages, "at least one passage fits"
    # Never over; counted blocks over-count by at most a token per joint (BPE merges across the "\n\n").
    slack = prompt.context_tokens - real
    assert real <= budget and 0 <= slack <= len(prompt.passages), (real, prompt.context_tokens)
    # The next passage would not have fitted: the budget is used, not wasted.
    skipped = [d for d in prompt.decisions if d.reason == "budget"]
    assert not skipped or prompt.context_tokens + skipped[0].tokens > budget


def test_the_approximation_is_far_off_on_such_text(exact) -> None:
    for text in (CODE, TABLE, FOREIGN):
        real = exact(text)  # type: ignore[operator]
        assert abs(approx_tokens(text) - real) / real > 0.1, text[:20]


def test_unknown_tokenizer_spec_is_refused() -> None:
    s = Settings().model_copy(update={"llm": Settings().llm.model_copy(update={"tokenizer": "nope"})})
    with pytest.raises(ValueError):
        token_counter(s)


def test_approx_fallback_is_counted() -> None:
    s = Settings().model_copy(update={"llm": Settings().llm.model_copy(update={"tokenizer": "approx"})})
    counter = token_counter(s)
    assert isinstance(counter, ApproxTokenCounter) and counter("abcdefg") == approx_tokens("abcdefg")
