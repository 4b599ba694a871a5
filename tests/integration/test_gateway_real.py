"""The gateway on the real stack: uvicorn + real Kafka + the six consumers in process (extractive stub LLM).

POST /v1/queries, then the SSE stream brings token deltas and a final answer whose citations resolve to
ingested chunks; another tenant (or user) cannot read the query id; refused requests (401/413/422/404)
put nothing on the requests topic, checked by reading the topic itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from gateway.app import create_app
from gateway.auth import mint_token
from gateway.client import GatewayClient
from gateway.server import serve_in_process
from producers.publisher import DocumentPublisher
from ragstream.adapters.llm import ExtractiveStub
from ragstream.core.prompt import ABSTAIN
from ragstream.runtime.deps import Deps
from ragstream.settings import Settings
from schemas.errors import decode
from schemas.ingestion import Acl
from schemas.topics import QUERIES_REQUESTED
from tests.support.kafka import read_all
from tests.support.pipeline import Harness, document_indexed, eventually, isolated_pipeline_settings

pytestmark = pytest.mark.integration
ALL = ("normalizer", "chunker", "embedder", "retrieval", "rerank", "generation")
DOCS = {
    (
        "acme",
        "handbook.md",
    ): "# Handbook\n\nThe acme cafeteria opens at eight in the morning and closes at three.",
    ("globex", "launch.md"): "# Launch\n\nThe globex launch code name is ZEBRA-9931 and it happens in May.",
}


@dataclass
class Env:
    h: Harness
    s: Settings
    url: str

    def token(self, tenant: str, user: str, **kw: object) -> str:
        return mint_token(self.s.auth, tenant, user, **kw)  # type: ignore[arg-type]

    def auth(self, tenant: str, user: str, **kw: object) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant, user, **kw)}"}


@pytest.fixture(scope="module")
async def env(settings: Settings, embedder, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    s = isolated_pipeline_settings(settings, uuid.uuid4().hex[:10])
    tmp = tmp_path_factory.mktemp("gateway")
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
            yield Env(h, s, url)


async def test_sse_stream_deltas_then_answer_with_resolving_citations(env: Env) -> None:
    async with GatewayClient(env.url, env.token("acme", "alice")) as client:
        seen: list[str] = []
        result = await client.ask("When does the acme cafeteria open?", seen.append)
    assert result.final_event == "answer", result.final
    assert result.deltas and seen == [d["text"] for d in result.deltas]
    assert [d["seq"] for d in result.deltas] == sorted(d["seq"] for d in result.deltas)
    final = result.final
    assert "eight" in final["answer"] and not final["abstained"]
    assert "".join(seen).strip() and "eight" in "".join(seen)
    assert final["citations"], final
    ingested = env.h.chunk_ids("acme")
    for c in final["citations"]:
        assert c["chunk_id"] in ingested and c["document_id"] == "handbook.md" and c["source_version"]
        stored = env.h.store.get_chunks("acme", [c["chunk_id"]])
        assert c["chunk_id"] in stored and "cafeteria" in stored[c["chunk_id"]]["text"]
    assert result.timings_ms["client_first_delta"] <= result.timings_ms["client_total"]
    assert "gateway_total" in final["timings_ms"] and "retrieval" in final["timings_ms"]


async def test_blocking_answer_and_abstention(env: Env) -> None:
    async with httpx.AsyncClient(base_url=env.url, timeout=60) as c:
        r = await c.post(
            "/v1/answer",
            json={"question": "What is the boiling point of liquid nitrogen?"},
            headers=env.auth("acme", "alice"),
        )
    assert r.status_code == 200, r.text
    assert r.json()["abstained"] is True and r.json()["answer"] == ABSTAIN and r.json()["citations"] == []


async def test_other_tenant_cannot_read_the_query(env: Env) -> None:
    async with httpx.AsyncClient(base_url=env.url, timeout=60) as c:
        alice = env.auth("acme", "alice")
        r = await c.post("/v1/queries", json={"question": "When does the cafeteria open?"}, headers=alice)
        assert r.status_code == 202
        qid = r.json()["query_id"]
        for who in (env.auth("globex", "alice"), env.auth("acme", "bob")):
            assert (await c.get(f"/v1/queries/{qid}", headers=who)).status_code == 404
            assert (await c.get(f"/v1/queries/{qid}/stream", headers=who)).status_code == 404

        async def answered() -> bool:
            return (await c.get(f"/v1/queries/{qid}", headers=alice)).json()["status"] == "answered"

        for _ in range(200):
            if await answered():
                break
            await asyncio.sleep(0.1)
        assert await answered()
        assert (await c.get(f"/v1/queries/{qid}", headers=env.auth("globex", "alice"))).status_code == 404


async def test_refused_requests_put_nothing_on_the_requests_topic(env: Env) -> None:
    before = {r.key for r in await read_all(env.s.kafka, QUERIES_REQUESTED.name)}
    alice = env.auth("acme", "alice")
    json_ct = {**alice, "content-type": "application/json"}
    refused = [
        ("post", "/v1/queries", {"json": {"question": "q"}}, 401),
        (
            "post",
            "/v1/queries",
            {"json": {"question": "q"}, "headers": env.auth("acme", "a", ttl_s=-600)},
            401,
        ),
        (
            "post",
            "/v1/answer",
            {"json": {"question": "q"}, "headers": {"Authorization": "Bearer x.y.z"}},
            401,
        ),
        ("post", "/v1/queries", {"content": b"{not json", "headers": json_ct}, 422),
        ("post", "/v1/queries", {"json": {"question": "q", "tenant": "globex"}, "headers": alice}, 422),
        ("post", "/v1/queries", {"json": {"question": "q" * 2001}, "headers": alice}, 413),
        ("post", "/v1/queries", {"content": b"x" * 20_000, "headers": json_ct}, 413),
        ("get", "/v1/queries/not-a-query", {"headers": alice}, 404),
    ]
    async with httpx.AsyncClient(base_url=env.url, timeout=30) as c:
        for method, path, kw, status in refused:
            r = await c.request(method, path, **kw)
            assert r.status_code == status, (path, kw.keys(), r.text)
        ok = await c.post("/v1/queries", json={"question": "When does the cafeteria open?"}, headers=alice)
        assert ok.status_code == 202
    records = await read_all(env.s.kafka, QUERIES_REQUESTED.name, expect=len(before) + 1)
    new = [r for r in records if r.key not in before]
    assert [r.key.decode() for r in new] == [ok.json()["query_id"]]
    ev = decode(QUERIES_REQUESTED, new[0].value)
    assert ev.tenant_id == "acme" and ev.query.caller.subject == "alice" and ev.producer == "gateway"
