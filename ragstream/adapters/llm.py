"""LLM clients behind one Protocol: an OpenAI-compatible streaming chat client, and a stub for tests."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx

from ragstream.ports.models import ModelStreamIncompleteError, Usage
from ragstream.settings import LLMSettings


class OpenAIChat:
    """POST {base_url}/chat/completions with stream=true (vLLM, KServe, Ray Serve, llama.cpp all serve it)."""

    def __init__(self, cfg: LLMSettings, client: httpx.AsyncClient | None = None) -> None:
        self.cfg = cfg
        self.model = cfg.model
        headers = (
            {"Authorization": f"Bearer {cfg.api_key.get_secret_value()}"}
            if cfg.api_key.get_secret_value()
            else {}
        )
        self._client = client or httpx.AsyncClient(
            base_url=cfg.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout_s, connect=5.0),
        )

    async def stream(
        self, messages: list[dict[str, str]], max_tokens: int, usage: Usage
    ) -> AsyncIterator[str]:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self.cfg.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with self._client.stream("POST", "/chat/completions", json=body) as resp:
            if resp.status_code >= 400:
                detail = (await resp.aread())[:300]
                raise httpx.HTTPStatusError(
                    f"model server answered {resp.status_code}: {detail!r}",
                    request=resp.request,
                    response=resp,
                )
            # Only a finish_reason says the server ended the answer itself: llama-cpp-python's server sends
            # [DONE] without one when it cuts a stream short (another request interrupted it).
            finished = False
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise ModelStreamIncompleteError(f"model server sent a broken event: {exc}") from exc
                if chunk.get("usage"):
                    usage.prompt_tokens = int(chunk["usage"].get("prompt_tokens") or 0)
                    usage.completion_tokens = int(chunk["usage"].get("completion_tokens") or 0)
                for choice in chunk.get("choices") or []:
                    finished = finished or bool(choice.get("finish_reason"))
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece
            if not finished:
                raise ModelStreamIncompleteError("the model server's stream ended before the answer did")

    async def aclose(self) -> None:
        await self._client.aclose()


class ExtractiveStub:
    """A deterministic stand-in generator: answers with the first sentence of the first passage and cites it.

    Used by tests and benchmarks that measure the pipeline, not the model. It also abstains the way a
    model is told to when the prompt has no passages.
    """

    model = "extractive-stub"
    _PASSAGE = re.compile(r'<passage id="(\d+)"[^\n]*\n(.*?)\n</passage>', re.S)

    async def stream(
        self, messages: list[dict[str, str]], max_tokens: int, usage: Usage
    ) -> AsyncIterator[str]:
        from ragstream.core.prompt import ABSTAIN

        user = messages[-1]["content"]
        m = self._PASSAGE.search(user)
        if m is None:
            text = ABSTAIN
        else:
            sentence = re.split(r"(?<=[.!?])\s", m.group(2).strip(), maxsplit=1)[0]
            text = f"{sentence[:400]} [{m.group(1)}]"
        usage.prompt_tokens = sum(len(x["content"].split()) for x in messages)
        words = text.split(" ")
        usage.completion_tokens = len(words)
        for i, w in enumerate(words):
            yield w if i == 0 else " " + w
