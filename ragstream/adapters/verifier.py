"""The model-based verifier: each claim of an answer judged by the configured OpenAI-compatible model
against the passages it cites (JSON-schema constrained output), claims sharing passages in one request,
verdicts cached by claim + passage hash, every answer bounded in time (unjudged claims stay None).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from prometheus_client import Counter, Histogram

from ragstream.core.verify import (
    VERDICT_SCHEMA,
    Claim,
    claims_of,
    clean_extraction,
    extract_key,
    extract_messages,
    messages,
    parse_verdicts,
)
from ragstream.settings import LLMSettings

CALLS = Counter("ragstream_verifier_calls", "Verification requests sent to the model", ["outcome"])
CACHE_HITS = Counter("ragstream_verifier_cache_hits", "Claims answered from the verdict cache")
SECONDS = Histogram("ragstream_verifier_seconds", "Model time per verified answer")


@dataclass(frozen=True)
class Verification:
    verdicts: tuple[bool | None, ...]
    claims: tuple[Claim, ...]
    seconds: float
    calls: int

    @property
    def judged(self) -> bool:
        return bool(self.verdicts) and all(v is not None for v in self.verdicts)

    @property
    def supported(self) -> bool:
        """Every claim judged supported (an unjudged claim is not support)."""
        return bool(self.verdicts) and all(v is True for v in self.verdicts)

    @property
    def support(self) -> float:
        return sum(v is True for v in self.verdicts) / len(self.verdicts) if self.verdicts else 0.0


@dataclass
class ModelVerifier:
    cfg: LLMSettings
    max_claims_per_call: int = 6
    budget_s: float = 30.0  # per answer: past it the remaining claims stay unjudged
    max_tokens: int = 200
    cache: dict[str, bool] = field(default_factory=dict)
    extractions: dict[str, str | None] = field(default_factory=dict)
    _client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            key = self.cfg.api_key.get_secret_value()
            self._client = httpx.Client(
                base_url=self.cfg.base_url.rstrip("/"),
                headers={"Authorization": f"Bearer {key}"} if key else {},
                timeout=httpx.Timeout(min(self.cfg.timeout_s, self.budget_s), connect=5.0),
            )
        return self._client

    def _ask(self, claims: Sequence[Claim]) -> list[bool | None]:
        body = {
            "model": self.cfg.model,
            "messages": messages(claims),
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "response_format": {"type": "json_object", "schema": VERDICT_SCHEMA},
        }
        try:
            resp = self.client.post("/chat/completions", json=body)
            resp.raise_for_status()
            text = resp.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError):
            CALLS.labels("error").inc()
            return [None] * len(claims)
        CALLS.labels("ok").inc()
        return parse_verdicts(text, len(claims))

    def extract(self, question: str, passages: Sequence[str]) -> str | None:
        """The passage's own short answer to `question` (None: none found, or the model failed), cached by
        question + passages so every candidate answer of one question costs one call."""
        key = extract_key(question, passages)
        if key in self.extractions:
            CACHE_HITS.inc()
            return self.extractions[key]
        body = {
            "model": self.cfg.model,
            "messages": extract_messages(question, passages),
            "max_tokens": 24,
            "temperature": 0.0,
        }
        try:
            resp = self.client.post("/chat/completions", json=body)
            resp.raise_for_status()
            text = str(resp.json()["choices"][0]["message"]["content"])
        except (httpx.HTTPError, KeyError, IndexError, ValueError):
            CALLS.labels("error").inc()
            return None  # not cached: a transient failure must not stick
        CALLS.labels("ok").inc()
        self.extractions[key] = found = clean_extraction(text)
        return found

    def verify_claims(self, claims: Sequence[Claim]) -> Verification:
        t0 = time.monotonic()
        verdicts: dict[int, bool | None] = {}
        todo: dict[tuple[str, ...], list[int]] = {}
        for i, c in enumerate(claims):
            if c.key in self.cache:
                verdicts[i] = self.cache[c.key]
                CACHE_HITS.inc()
            else:
                todo.setdefault(c.passages, []).append(i)
        calls = 0
        for idxs in todo.values():
            for start in range(0, len(idxs), self.max_claims_per_call):
                batch = idxs[start : start + self.max_claims_per_call]
                if time.monotonic() - t0 > self.budget_s:
                    verdicts.update(dict.fromkeys(batch))
                    continue
                got = self._ask([claims[i] for i in batch])
                calls += 1
                for i, v in zip(batch, got, strict=True):
                    verdicts[i] = v
                    if v is not None:
                        self.cache[claims[i].key] = v
        dt = time.monotonic() - t0
        SECONDS.observe(dt)
        return Verification(tuple(verdicts.get(i) for i in range(len(claims))), tuple(claims), dt, calls)

    def verify(
        self,
        answer: str,
        passages: Sequence[str],
        question: str | None = None,
        cited: dict[str, str] | None = None,
    ) -> Verification:
        """Claims of `answer`, each against the passages it cites ([n] -> `cited`), else all `passages`."""
        return self.verify_claims(claims_of(answer, cited or {}, list(passages), question))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
