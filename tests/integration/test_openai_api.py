"""The OpenAI-compatible API with the official `openai` SDK (sync, async, streaming) on the real stack.

uvicorn + real Kafka and Weaviate + the six consumers in process (extractive stub LLM). API keys (sent by the
SDK as `Authorization: Bearer`) and JWTs name the tenant; the body never does. Another tenant's key never
gets the first tenant's documents; a bad key is `openai.AuthenticationError`; errors keep OpenAI's shape
with our code and correlation id.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

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


@dataclass
class Env:
    h: Harness
    s: Settings
    url: str
    keys: dict[str, str]  # tenant -> API key
    app: Any

    def client(self, tenant: str = "acme", **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys[tenant], max_retries=0, **kw)

    def aclient(self, tenant: str = "acme", **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.keys[tenant], max_retries=0, **kw)


@pytest.fixture(scope="module")
async def env(settings: Settings, embedder, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    keys = {t: f"rs-{t}-{secrets.token_urlsafe(24)}" for t in ("acme", "globex")}
    base = isolated_pipeline_settings(settings, uuid.uuid4().hex[:10])
    api_keys = {k: {"tenant": t, "subject": f"svc-{t}", "groups": []} for t, k in keys.items()}
    s = base.model_copy(update={"auth": base.auth.model_copy(update={"api_keys": api_keys})})
    tmp = tmp_path_factory.mktemp("openai")
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
        app = create_app(s)
        async with serve_in_process(app) as url:
            yield Env(h, s, url, keys, app)


def _check_citations(env: Env, tenant: str, extra: dict[str, Any], annotations: list[Any]) -> None:
    cites = extra["citations"]
    assert cites, extra
    ingested = env.h.chunk_ids(tenant)
    for c in cites:
        assert set(c) == {"citation_id", "document_id", "title", "source_version", "chunk_id"}
        assert c["chunk_id"] in ingested and c["source_version"]
    assert len(annotations) == len(cites)
    for a, c in zip(annotations, cites, strict=True):
        a = a if isinstance(a, dict) else a.model_dump()
        assert a["type"] == "url_citation"
        url = a["url_citation"]["url"]
        assert url.startswith("ragstream://documents/") and c["chunk_id"] in url


async def test_models_list_the_callers_models(env: Env) -> None:
    async with env.aclient() as client:
        models = await client.models.list()
    ids = [m.id for m in models.data]
    assert ids[0] == "ragstream" and {"ragstream:interactive", "ragstream:batch"} <= set(ids)
    assert {m.owned_by for m in models.data} == {"acme"}


async def test_sync_completion_is_cited_with_usage(env: Env) -> None:
    def ask() -> Any:
        with env.client() as client:
            return client.chat.completions.create(
                model="ragstream", messages=[{"role": "user", "content": QUESTION}]
            )

    resp = await asyncio.to_thread(ask)
    msg = resp.choices[0].message
    assert "eight" in (msg.content or "") and resp.choices[0].finish_reason == "stop"
    assert msg.annotations and msg.annotations[0].type == "url_citation"
    _check_citations(env, "acme", resp.model_extra or {}, list(msg.annotations))
    assert resp.usage is not None and resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.model == "ragstream" and resp.id.startswith("chatcmpl-")


async def test_async_completion_with_history_and_jwt(env: Env) -> None:
    token = mint_token(env.s.auth, "acme", "alice")
    async with openai.AsyncOpenAI(base_url=f"{env.url}/v1", api_key=token, max_retries=0) as client:
        resp = await client.chat.completions.create(
            model="ragstream:batch",
            messages=[
                {"role": "system", "content": "Answer from the documents."},
                {"role": "user", "content": "Tell me about the cafeteria."},
                {"role": "assistant", "content": "Which detail?"},
                {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
            ],
            extra_body={"tenant": "globex", "user": "mallory"},  # ignored: identity is the credential's
        )
    assert "eight" in (resp.choices[0].message.content or "")
    _check_citations(env, "acme", resp.model_extra or {}, list(resp.choices[0].message.annotations or []))


async def test_streaming_deltas_then_final_chunk_with_citations(env: Env) -> None:
    async with env.aclient() as client:
        stream = await client.chat.completions.create(
            model="ragstream",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            extra_headers={"X-Request-Class": "interactive"},
        )
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "eight" in text and len(chunks) >= 3
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    extra = final.model_extra or {}
    delta_extra = final.choices[0].delta.model_extra or {}
    _check_citations(env, "acme", extra, delta_extra["annotations"])
    assert final.usage is not None and final.usage.completion_tokens > 0
    assert extra["ragstream"]["answer"].strip() == text.strip()


async def test_sync_streaming(env: Env) -> None:
    def ask() -> list[Any]:
        with env.client() as client:
            stream = client.chat.completions.create(
                model="ragstream", messages=[{"role": "user", "content": QUESTION}], stream=True
            )
            return list(stream)

    chunks = await asyncio.to_thread(ask)
    assert "eight" in "".join(c.choices[0].delta.content or "" for c in chunks)
    assert (chunks[-1].model_extra or {})["citations"]


async def test_other_tenant_never_gets_the_first_tenants_documents(env: Env) -> None:
    acme_chunks = env.h.chunk_ids("acme")
    for question in (QUESTION, "What is the globex launch code name?", "cafeteria opens eight morning"):
        async with env.aclient("globex") as client:
            resp = await client.chat.completions.create(
                model="ragstream",
                messages=[{"role": "user", "content": question}],
                extra_body={"tenant": "acme"},
            )
        content = resp.choices[0].message.content or ""
        assert "cafeteria" not in content and "eight" not in content
        for c in (resp.model_extra or {})["citations"]:
            assert c["chunk_id"] not in acme_chunks and c["document_id"] != "handbook.md"
    async with env.aclient("acme") as client:
        resp = await client.chat.completions.create(
            model="ragstream", messages=[{"role": "user", "content": "What is the globex launch code name?"}]
        )
    assert CANARY not in (resp.choices[0].message.content or "")
    assert all(c["document_id"] != "launch.md" for c in (resp.model_extra or {})["citations"])


async def test_bad_key_is_authentication_error_in_openai_shape(env: Env) -> None:
    for key in ("not-a-key", "a.b.c", mint_token(env.s.auth, "acme", "a", ttl_s=-600)):
        async with openai.AsyncOpenAI(base_url=f"{env.url}/v1", api_key=key, max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError) as info:
                await client.chat.completions.create(
                    model="ragstream", messages=[{"role": "user", "content": QUESTION}]
                )
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()
        err = info.value.body
        assert isinstance(err, dict) and err["code"] == "unauthorized" and err["correlation_id"]
        assert err["type"] == "authentication_error" and key not in str(err)
        assert info.value.response.headers["X-Correlation-ID"] == err["correlation_id"]


async def test_errors_keep_native_status_codes(env: Env) -> None:
    async with env.aclient() as client:
        with pytest.raises(openai.NotFoundError) as nf:
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
        assert nf.value.body["code"] == "model_not_found"  # type: ignore[index]
        with pytest.raises(openai.APIStatusError) as big:
            await client.chat.completions.create(
                model="ragstream", messages=[{"role": "user", "content": "q" * 2001}]
            )
        assert big.value.status_code == 413 and big.value.body["code"] == "too_large"  # type: ignore[index]
        with pytest.raises(openai.UnprocessableEntityError) as bad:
            await client.chat.completions.create(model="ragstream", messages=[])
        assert bad.value.body["param"] == "messages"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model="ragstream",
                messages=[{"role": "user", "content": "q"}],
                extra_headers={"X-Request-Class": "x"},
            )
    async with httpx.AsyncClient(base_url=env.url, timeout=30) as c:
        r = await c.post("/v1/chat/completions", json={"model": "ragstream", "messages": []})
    assert r.status_code == 401 and set(r.json()["error"]) == {
        "message",
        "type",
        "code",
        "param",
        "correlation_id",
    }


async def test_tenant_over_its_share_is_rate_limited_with_retry_after(env: Env) -> None:
    gw = env.app.state.gateway
    refused = gw.admission.check
    gw.admission.check = lambda *a, **k: _Refusal()  # type: ignore[method-assign]
    try:
        async with env.aclient() as client:
            with pytest.raises(openai.RateLimitError) as info:
                await client.chat.completions.create(
                    model="ragstream", messages=[{"role": "user", "content": "q"}]
                )
    finally:
        gw.admission.check = refused  # type: ignore[method-assign]
    assert info.value.response.headers["Retry-After"] == "3"
    assert info.value.body["code"] == "tenant_inflight"  # type: ignore[index]


@dataclass
class _Refusal:
    reason: str = "tenant_inflight"
    retry_after_s: int = 3
    detail: str = "test"
