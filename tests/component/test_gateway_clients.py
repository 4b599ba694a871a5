"""The OpenAI-compatible API and the MCP endpoint on an in-memory bus (no Kafka): shapes, identity from the
credential only, failures reported as a code and a correlation id (never a stage's internal text)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import openai
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from gateway.app import create_app
from gateway.hub import AnswerHub
from gateway.openai_api import annotations
from gateway.server import serve_in_process
from ragstream.settings import AuthSettings, Settings
from schemas.serving import AnswerDelta, Citation, QueryAnswered, QueryFailed, QueryRequested

pytestmark = pytest.mark.component
KEY = f"k-{secrets.token_urlsafe(16)}"
INTERNAL = "weaviate exploded at 10.0.0.7:8080 with secret sauce"
S = Settings(
    auth=AuthSettings(
        jwt_secret=SecretStr(secrets.token_urlsafe(48)),
        api_keys={KEY: {"tenant": "acme", "subject": "svc", "groups": ["ops"]}},
    )
)
CITE = Citation(
    citation_id="1", document_id="hand book.md", chunk_id="c-1", source_version="v3", title="Handbook"
)


class Pub:
    """Answers every query on the in-memory hub: deltas then a final (a failure when the question says so)."""

    def __init__(self, hub: AnswerHub) -> None:
        self.hub = hub
        self.events: list[QueryRequested] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, event: QueryRequested) -> None:
        self.events.append(event)
        asyncio.get_running_loop().call_later(0.05, self._answer, event)

    def _answer(self, ev: QueryRequested) -> None:
        q = ev.query
        base: dict[str, Any] = {"tenant_id": ev.tenant_id, "correlation_id": ev.correlation_id}
        if "fail" in q.question:
            self.hub.dispatch(
                QueryFailed(
                    **base, query_id=q.query_id, subject=q.caller.subject, stage="retrieval", reason=INTERNAL
                )
            )
            return
        for seq, text in enumerate(("It opens ", "at eight [1].")):
            self.hub.dispatch(AnswerDelta(**base, query_id=q.query_id, seq=seq, text=text))
        self.hub.dispatch(
            QueryAnswered(
                **base,
                query_id=q.query_id,
                subject=q.caller.subject,
                answer="It opens at eight [1].",
                citations=(CITE,),
                prompt_tokens=42,
                completion_tokens=7,
                context_chunk_ids=("c-1", "c-2"),
            )
        )


class NoLag:
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def lag(self) -> int:
        return 0


@dataclass
class Env:
    url: str
    pub: Pub


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[Env]:
    hub = AnswerHub()
    pub = Pub(hub)
    async with serve_in_process(create_app(S, publisher=pub, hub=hub, lag_probe=NoLag())) as url:
        yield Env(url, pub)


def _client(env: Env, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{env.url}/v1", api_key=key, max_retries=0)


def test_annotation_indices_span_the_marker() -> None:
    (a,) = annotations("It opens at eight [1].", [CITE])
    assert a["url_citation"]["start_index"] == 18 and a["url_citation"]["end_index"] == 21
    assert a["url_citation"]["url"] == "ragstream://documents/hand%20book.md?version=v3&chunk=c-1"
    assert annotations("no marker", [CITE])[0]["url_citation"]["start_index"] == len("no marker")


async def test_completion_shape_and_identity_from_the_key(env: Env) -> None:
    async with _client(env) as c:
        r = await c.chat.completions.create(
            model="ragstream:batch",
            messages=[{"role": "user", "content": "When?"}],
            extra_body={"tenant": "globex", "user": "mallory", "groups": ["admin"]},
        )
    ev = env.pub.events[-1]
    assert (
        ev.tenant_id == "acme" and ev.query.caller.subject == "svc" and "admin" not in ev.query.caller.groups
    )
    assert ev.query.request_class == "batch" and ev.query.question == "When?"
    assert r.choices[0].message.content == "It opens at eight [1]."
    assert r.usage is not None and (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        r.usage.total_tokens,
    ) == (
        42,
        7,
        49,
    )
    assert (r.model_extra or {})["citations"] == [
        {
            "citation_id": "1",
            "document_id": "hand book.md",
            "title": "Handbook",
            "source_version": "v3",
            "chunk_id": "c-1",
        }
    ]


async def test_stream_failure_is_a_code_and_correlation_id_only(env: Env) -> None:
    async with _client(env) as c:
        stream = await c.chat.completions.create(
            model="ragstream", messages=[{"role": "user", "content": "please fail"}], stream=True
        )
        with pytest.raises(openai.APIError) as info:
            async for _ in stream:
                pass
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "query_failed" and body["correlation_id"]
    assert INTERNAL not in str(body) and "weaviate" not in str(info.value)


async def test_blocking_failure_is_502_in_openai_shape(env: Env) -> None:
    async with _client(env) as c:
        with pytest.raises(openai.InternalServerError) as info:
            await c.chat.completions.create(
                model="ragstream", messages=[{"role": "user", "content": "fail now"}]
            )
    assert info.value.status_code == 502 and info.value.body["code"] == "query_failed"  # type: ignore[index]
    assert INTERNAL not in info.value.response.text


async def test_messages_without_a_user_turn_are_refused(env: Env) -> None:
    async with _client(env) as c:
        with pytest.raises(openai.BadRequestError):
            await c.chat.completions.create(model="ragstream", messages=[{"role": "system", "content": "hi"}])
    async with httpx.AsyncClient(base_url=env.url) as h:
        r = await h.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "q"}] * 65},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert r.status_code == 422 and r.json()["error"]["param"] == "messages"


async def test_mcp_tools_and_failures(env: Env) -> None:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"})
    async with Client(streamable_http_client(f"{env.url}/mcp", http_client=http)) as client:
        search = await client.call_tool("search", {"query": "When?"})
        failed = await client.call_tool("ask", {"question": "please fail"})
    data = search.structured_content
    assert isinstance(data, dict)
    (p,) = data["passages"]
    assert p["snippet"] == "It opens at eight" and p["chunk_id"] == "c-1"
    assert data["context_chunk_ids"] == ["c-1", "c-2"]
    assert env.pub.events[-1].tenant_id == "acme"
    assert (
        failed.is_error
        and "query_failed" in failed.content[0].text
        and "correlation_id" in failed.content[0].text
    )
    assert INTERNAL not in failed.content[0].text


async def test_console_is_served_without_any_outside_asset(env: Env) -> None:
    async with httpx.AsyncClient(base_url=env.url, follow_redirects=True) as h:
        page = await h.get("/console")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"
        for asset in ("console.js", "console.css"):
            r = await h.get(f"/console/{asset}")
            assert r.status_code == 200
            assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text
        assert "http://" not in page.text and "https://" not in page.text
        js = (await h.get("/console/console.js")).text
        assert "/v1/chat/completions" in js and "innerHTML" not in js and "textContent" in js
        assert (await h.get("/console/__init__.py")).status_code == 404


# No Chromium on this machine: the console's script runs in node against the served gateway instead, with a
# minimal stand-in for the few DOM calls it makes (getElementById, createElement, events, textContent).
NODE_DRIVER = r"""
const base = process.argv[2], token = process.argv[3], script = process.argv[4];
const realFetch = globalThis.fetch;
globalThis.fetch = (url, opts) => realFetch(base + url, opts);
const els = {};
function el(id) {
  return els[id] ||= { id, hidden: false, textContent: "", value: "", children: [], handlers: {},
    replaceChildren() { this.children = []; }, append(c) { this.children.push(c); },
    addEventListener(t, f) { this.handlers[t] = f; } };
}
globalThis.document = { getElementById: el, createElement: () => el("li-" + Math.random()) };
const store = {};
globalThis.sessionStorage = { getItem: (k) => store[k] ?? null, setItem: (k, v) => { store[k] = v; },
  removeItem: (k) => { delete store[k]; } };
el("ask").hidden = true;  // as in index.html
require(script);
const ev = { preventDefault() {} };
const until = async (f) => {
  for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 25));
};
(async () => {
  el("token").value = token;
  el("signin-form").handlers.submit(ev);
  await until(() => el("who").textContent || el("signin-error").textContent);
  const signedIn = { who: el("who").textContent, error: el("signin-error").textContent };
  el("question").value = "When does it open?";
  el("request-class").value = "interactive";
  el("ask-form").handlers.submit(ev);
  await until(() => el("meta").textContent || el("ask-error").textContent);
  console.log(JSON.stringify({ ...signedIn, answer: el("answer").textContent,
    citations: el("citations").children.map((c) => c.textContent), meta: el("meta").textContent,
    askError: el("ask-error").textContent }));
})();
"""


async def _drive_console(env: Env, tmp_path: Any, key: str) -> dict[str, Any]:
    import json
    import shutil
    from pathlib import Path

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    driver = tmp_path / "drive.cjs"
    driver.write_text(NODE_DRIVER)
    script = tmp_path / "console.cjs"
    script.write_text((Path(__file__).parents[2] / "gateway/console/static/console.js").read_text())
    proc = await asyncio.create_subprocess_exec(
        node, str(driver), env.url, key, str(script), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 180)  # node on a loaded 2-vCPU box
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_console_script_signs_in_streams_and_cites(env: Env, tmp_path: Any) -> None:
    seen = await _drive_console(env, tmp_path, KEY)
    # "tenant acme" at sign-in, the subject appended once /me answers: either may be read first
    assert seen["who"].startswith("tenant acme") and not seen["error"] and not seen["askError"]
    assert seen["answer"] == "It opens at eight [1]."
    assert seen["citations"] == ["[1] Handbook - hand book.md @ v3 - chunk c-1"]
    assert "42 prompt / 7 completion tokens" in seen["meta"]


async def test_console_script_refuses_a_bad_token(env: Env, tmp_path: Any) -> None:
    seen = await _drive_console(env, tmp_path, "not-a-key")
    assert seen["error"].startswith("401 unauthorized") and "correlation" in seen["error"]
    assert seen["who"] == "" and seen["answer"] == ""


async def test_oversized_bodies_are_413_in_openai_shape(env: Env) -> None:
    auth = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=env.url) as h:
        big = await h.post(
            "/v1/chat/completions", content=b"x" * (S.serving.max_body_bytes + 1), headers=auth
        )
        long_q = await h.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "q" * (S.serving.max_question_chars + 1)}]},
            headers=auth,
        )
        native = await h.post("/v1/queries", content=b"x" * (S.serving.max_body_bytes + 1), headers=auth)
    for r in (big, long_q):
        assert r.status_code == 413, r.text
        err = r.json()["error"]
        assert err["code"] == "too_large" and err["correlation_id"] == r.headers["X-Correlation-ID"]
    assert "characters" in long_q.json()["error"]["message"]  # the route's own message is kept
    assert native.status_code == 413 and "detail" in native.json()  # the native API's shape is unchanged
