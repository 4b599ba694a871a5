"""The real local model, end to end through the gateway: CI asks it at least once and fails when it cannot.

`ragstream stack up` starts llama-cpp-python on `llm.base_url` (unless `llm.local_model=none`); this suite
fails, not skips, when that server cannot complete one token. A model server that dies mid-stream, or ends
its stream without the final event, gives `QueryFailed` with a code, never an empty answer, and `ragstream
ask` exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.app import create_app
from gateway.auth import mint_token
from gateway.client import GatewayClient
from gateway.server import serve_in_process
from producers.publisher import DocumentPublisher
from ragstream.adapters.llm import OpenAIChat
from ragstream.runtime.deps import Deps
from ragstream.settings import Settings
from schemas.ingestion import Acl
from schemas.topics import ANSWERS
from tests.support.kafka import read_all
from tests.support.pipeline import Harness, document_indexed, eventually, isolated_pipeline_settings

pytestmark = pytest.mark.e2e
ALL = ("normalizer", "chunker", "embedder", "retrieval", "rerank", "generation")
DOC = (
    "# Cafeteria\n\nThe acme cafeteria opens at eight in the morning and closes at three in the afternoon. "
    "Breakfast is served until ten."
)


def one_token(settings: Settings) -> str | None:
    """None when the model completes one token, else why not (a listing of models is not enough)."""
    body = {
        "model": settings.llm.model,
        "messages": [{"role": "user", "content": "Say OK."}],
        "max_tokens": 1,
    }
    try:
        r = httpx.post(f"{settings.llm.base_url.rstrip('/')}/chat/completions", json=body, timeout=120)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return (
        None if r.status_code == 200 and r.json().get("choices") else f"HTTP {r.status_code}: {r.text[:200]}"
    )


async def _indexed_env(settings: Settings, deps: Deps, tmp) -> AsyncIterator[tuple[Harness, Settings, str]]:
    s = deps.settings
    async with Harness(s, deps.embedder, ALL, deps=deps, tmp=tmp) as h:
        async with DocumentPublisher(s) as pub:
            await pub.upsert(
                "acme",
                "cafeteria.md",
                content=DOC.encode(),
                mime_type="text/markdown",
                acl=Acl(groups=("everyone",)),
            )
        await eventually(lambda: document_indexed(h, "acme", "cafeteria.md"), timeout_s=120)
        async with serve_in_process(create_app(s)) as url:
            yield h, s, url


async def test_the_real_model_answers_with_a_citation(settings, embedder, tmp_path) -> None:
    if settings.llm.local_model != "none":
        why = await asyncio.to_thread(one_token, settings)
        assert why is None, f"the local model server cannot answer: {why}"
    s = isolated_pipeline_settings(settings, uuid.uuid4().hex[:10])
    deps = Deps(s, embedder=embedder)  # the real OpenAI-compatible client (llm.base_url)
    async for _h, s2, url in _indexed_env(settings, deps, tmp_path):
        async with GatewayClient(url, mint_token(s2.auth, "acme", "alice", ("everyone",))) as client:
            result = await client.ask("When does the acme cafeteria open?", request_class="batch")
        out = result.as_dict()
        assert result.final_event == "answer", out
        assert out["answer"].strip() and not out["abstained"], out
        assert [c["document_id"] for c in out["citations"]] == ["cafeteria.md"], out
        assert out["model"] and out["model"] != "extractive-stub"


class BrokenModelServer:
    """An OpenAI-compatible endpoint that streams two deltas and then breaks: `cut` closes the connection
    mid-body, `short` ends the body cleanly but without a finish_reason or [DONE]."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for word in ("The", " cafeteria"):
                data = json.dumps({"choices": [{"delta": {"content": word}, "finish_reason": None}]})
                line = f"data: {data}\n\n".encode()
                writer.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            await writer.drain()
            if self.mode == "short":
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.mark.parametrize(
    ("mode", "code"), [("cut", "model_unavailable"), ("short", "model_stream_incomplete")]
)
async def test_a_broken_model_stream_is_a_failure_never_an_empty_answer(
    settings, embedder, tmp_path, mode: str, code: str
) -> None:
    s = isolated_pipeline_settings(settings, uuid.uuid4().hex[:10])
    async with BrokenModelServer(mode) as base_url:
        llm = OpenAIChat(s.llm.model_copy(update={"base_url": base_url}))
        async for _h, s2, url in _indexed_env(settings, Deps(s, embedder=embedder, llm=llm), tmp_path):
            async with GatewayClient(url, mint_token(s2.auth, "acme", "alice", ("everyone",))) as client:
                result = await client.ask("When does the acme cafeteria open?", request_class="batch")
            out = result.as_dict()
            assert result.final_event == "error" and out["answer"] == "", out
            assert out["error"]["code"] == "query_failed" and out["error"]["correlation_id"]
            finals = [
                json.loads(r.value)
                for r in await read_all(s2.kafka, ANSWERS.name, timeout_s=10)
                if json.loads(r.value).get("type") == "QueryFailed"
            ]
            assert [f["code"] for f in finals if f["query_id"] == result.query_id] == [code]
            # The CLI a person uses says so and exits non-zero.
            env = {**os.environ, "RAGSTREAM_KAFKA__TOPIC_PREFIX": s2.kafka.topic_prefix}
            proc = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "application.cli.main",
                    "ask",
                    "When does it open?",
                    "--tenant",
                    "acme",
                    "--user",
                    "alice",
                    "--group",
                    "everyone",
                    "--class",
                    "batch",
                    "--url",
                    url,
                ],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )
            assert proc.returncode == 1, (proc.stdout, proc.stderr)
            assert "query failed" in proc.stderr
