"""The model stream ends truthfully: only a finish_reason closes an answer; [DONE] or a clean end without
one (llama-cpp-python's server cuts a stream short that way when another request arrives) is incomplete."""

from __future__ import annotations

import json

import httpx
import pytest

from ragstream.adapters.llm import OpenAIChat
from ragstream.ports import ModelStreamIncompleteError, Usage
from ragstream.settings import LLMSettings

pytestmark = pytest.mark.unit


def _chat(*events: dict[str, object] | str) -> OpenAIChat:
    body = "".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events)

    def reply(_req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    cfg = LLMSettings(base_url="http://model.test/v1")
    return OpenAIChat(cfg, httpx.AsyncClient(base_url=cfg.base_url, transport=httpx.MockTransport(reply)))


def delta(text: str | None = None, finish: str | None = None) -> dict[str, object]:
    d = {"content": text} if text is not None else {"role": "assistant"}
    return {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


async def _collect(llm: OpenAIChat) -> str:
    return "".join([p async for p in llm.stream([{"role": "user", "content": "q"}], 16, Usage())])


async def test_an_answer_with_its_finish_reason_is_complete() -> None:
    assert (
        await _collect(_chat(delta(), delta("Hi"), delta(" there"), delta(finish="stop"), "[DONE]"))
        == "Hi there"
    )


async def test_done_without_a_finish_reason_is_incomplete() -> None:
    with pytest.raises(ModelStreamIncompleteError):
        await _collect(_chat(delta(), "[DONE]"))
    with pytest.raises(ModelStreamIncompleteError):
        await _collect(_chat(delta(), delta("Half an"), "[DONE]"))
