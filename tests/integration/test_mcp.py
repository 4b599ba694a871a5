"""The MCP server with the SDK's own client (`mcp.Client`) on the real stack.

Streamable HTTP at `/mcp` on the gateway (uvicorn + real Kafka and Weaviate + the six consumers in process,
extractive stub LLM) and stdio (`ragstream mcp`, a subprocess forwarding to that gateway): list the tools,
call `search` and `ask`, no or a bad credential is refused, another tenant sees nothing of the first.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from gateway.app import create_app
from gateway.auth import mint_token
from gateway.server import serve_in_process
from producers.publisher import DocumentPublisher
from ragstream.adapters.llm import ExtractiveStub
from ragstream.runtime.deps import Deps
from ragstream.settings import Settings
from schemas.ingestion import Acl
from tests.support.pipeline import Harness, document_indexed, eventually, isolated_pipeline_settings

pytestmark = pytest.mark.integration
ALL = ("normalizer", "chunker", "embedder", "retrieval", "rerank", "generation")
CANARY = "ZEBRA-9931"
DOCS = {
    (
        "acme",
        "handbook.md",
    ): "# Handbook\n\nThe acme cafeteria opens at eight in the morning and closes at three.",
    ("globex", "launch.md"): f"# Launch\n\nThe globex launch code name is {CANARY} and it happens in May.",
}
QUESTION = "When does the acme cafeteria open?"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    h: Harness
    s: Settings
    url: str
    keys: dict[str, str]

    def client(self, headers: dict[str, str] | None) -> Client:
        http = httpx2.AsyncClient(headers=headers or {}, timeout=httpx2.Timeout(120.0))
        return Client(streamable_http_client(f"{self.url}/mcp", http_client=http))

    def key(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}


@pytest.fixture(scope="module")
async def env(settings: Settings, embedder, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    keys = {t: f"rs-{t}-{secrets.token_urlsafe(24)}" for t in ("acme", "globex")}
    base = isolated_pipeline_settings(settings, uuid.uuid4().hex[:10])
    api_keys = {k: {"tenant": t, "subject": f"svc-{t}", "groups": []} for t, k in keys.items()}
    s = base.model_copy(update={"auth": base.auth.model_copy(update={"api_keys": api_keys})})
    tmp = tmp_path_factory.mktemp("mcp")
    async with Harness(s, embedder, ALL, deps=Deps(s, llm=ExtractiveStub()), tmp=tmp) as h:
        async with DocumentPublisher(s) as pub:
            for (tenant, doc), text in DOCS.items():
                await pub.upsert(
                    tenant,
                    doc,
                    content=text.encode(),
                    mime_type="text/markdown",
                    acl=Acl(groups=("everyone",)),
                )
        for tenant, doc in DOCS:
            await eventually(lambda t=tenant, d=doc: document_indexed(h, t, d))
        async with serve_in_process(create_app(s)) as url:
            yield Env(h, s, url, keys)


def _structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data = result.structured_content
    if isinstance(data, dict) and set(data) == {"result"}:
        data = data["result"]
    return data if isinstance(data, dict) else json.loads(result.content[0].text)


async def test_lists_both_tools(env: Env) -> None:
    async with env.client(env.key("acme")) as client:
        tools = await client.list_tools()
    by_name = {t.name: t for t in tools.tools}
    assert set(by_name) == {"search", "ask"}
    assert "query" in by_name["search"].input_schema["properties"]
    assert "question" in by_name["ask"].input_schema["properties"]
    assert "tenant" not in json.dumps([t.input_schema for t in tools.tools])


async def test_ask_and_search_return_cited_passages(env: Env) -> None:
    ingested = env.h.chunk_ids("acme")
    token = mint_token(env.s.auth, "acme", "alice")
    for headers in (env.key("acme"), {"Authorization": f"Bearer {token}"}):
        async with env.client(headers) as client:
            ask = _structured(await client.call_tool("ask", {"question": QUESTION}))
            search = _structured(await client.call_tool("search", {"query": QUESTION}))
        assert "eight" in ask["answer"] and not ask["abstained"] and ask["citations"]
        for c in ask["citations"]:
            assert c["chunk_id"] in ingested and c["document_id"] == "handbook.md" and c["source_version"]
        assert search["passages"] and search["context_chunk_ids"]
        for p in search["passages"]:
            assert p["chunk_id"] in ingested and p["document_id"] == "handbook.md"
            assert "eight" in p["snippet"]
        assert set(search["context_chunk_ids"]) <= ingested


async def test_no_or_bad_credential_is_refused(env: Env) -> None:
    for headers in (None, {"Authorization": "Bearer not-a-key"}, {"Authorization": "Bearer a.b.c"}):
        with pytest.raises(Exception) as info:  # the SDK raises its MCPError (in a task group) on the 401
            async with env.client(headers) as client:
                await client.list_tools()
        assert "MCPError" in repr(info.value)
    async with httpx.AsyncClient(base_url=env.url, timeout=30) as c:
        r = await c.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.json()["error"]["correlation_id"] == r.headers["X-Correlation-ID"]
    assert "WWW-Authenticate" in r.headers


async def test_other_tenant_sees_nothing_of_the_first(env: Env) -> None:
    acme = env.h.chunk_ids("acme")
    async with env.client(env.key("globex")) as client:
        for question in (QUESTION, "cafeteria opens eight morning"):
            ask = _structured(await client.call_tool("ask", {"question": question, "request_class": "batch"}))
            search = _structured(await client.call_tool("search", {"query": question}))
            assert "cafeteria" not in ask["answer"] and "eight" not in ask["answer"]
            for c in [*ask["citations"], *search["passages"]]:
                assert c["chunk_id"] not in acme and c["document_id"] != "handbook.md"
            assert not set(search["context_chunk_ids"]) & acme
    async with env.client(env.key("acme")) as client:
        ask = _structured(await client.call_tool("ask", {"question": "What is the globex launch code name?"}))
    assert CANARY not in ask["answer"]


async def test_stdio_server_forwards_with_the_env_token(env: Env) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "application.cli.main", "mcp", "--url", env.url],
        env={**os.environ, "RAGSTREAM_TOKEN": env.keys["acme"]},
        cwd=str(ROOT),
    )
    async with Client(params) as client:
        tools = await client.list_tools()
        assert {t.name for t in tools.tools} == {"search", "ask"}
        ask = _structured(await client.call_tool("ask", {"question": QUESTION}))
        search = _structured(await client.call_tool("search", {"query": QUESTION}))
    assert "eight" in ask["answer"] and ask["citations"][0]["document_id"] == "handbook.md"
    assert search["passages"] and search["passages"][0]["document_id"] == "handbook.md"
    bad = StdioServerParameters(
        command=sys.executable,
        args=["-m", "application.cli.main", "mcp", "--url", env.url],
        env={**os.environ, "RAGSTREAM_TOKEN": "not-a-key"},
        cwd=str(ROOT),
    )
    async with Client(bad) as client:
        result = await client.call_tool("ask", {"question": QUESTION})
    assert (
        result.is_error
        and "unauthorized" in result.content[0].text
        and "not-a-key" not in result.content[0].text
    )
