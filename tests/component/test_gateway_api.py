"""The gateway app in memory: httpx over ASGI, a recording publisher, an in-memory AnswerHub, a fake lag.

Covers 202/200/404/401/413/422/429/502/503/504, SSE, the blocking endpoint, API keys, health and metrics,
and that nothing is published for a refused request.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from gateway.app import create_app
from gateway.auth import mint_token
from gateway.backpressure import StaticLag
from gateway.client import parse_sse
from gateway.hub import AnswerHub
from ragstream.settings import AuthSettings, ServingSettings, Settings
from schemas.serving import AnswerDelta, Citation, QueryAnswered, QueryFailed, QueryRequested

pytestmark = pytest.mark.component

SETTINGS = Settings(
    auth=AuthSettings(
        jwt_secret=SecretStr(secrets.token_urlsafe(48)),
        api_keys={"k-acme": {"tenant": "acme", "subject": "svc", "groups": ["ops"]}},
    ),
    serving=ServingSettings(max_inflight=4, max_lag=100, max_question_chars=50, max_body_bytes=1024),
)
CITE = Citation(citation_id="1", document_id="handbook.md", chunk_id="c-1", source_version="v1", title="HB")


class RecordingPublisher:
    """Records what would go to Kafka; optionally plays the serving pipeline into the hub."""

    def __init__(self) -> None:
        self.events: list[QueryRequested] = []
        self.hub: AnswerHub | None = None
        self.auto_answer = False
        self.fail = False
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def publish(self, event: QueryRequested) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.events.append(event)
        if self.auto_answer:
            asyncio.get_running_loop().call_later(0.01, lambda: asyncio.create_task(self.play(event)))

    async def play(self, ev: QueryRequested) -> None:
        assert self.hub is not None
        q = ev.query
        for seq, text in enumerate(["The cafeteria ", "opens at eight ", "[1]"]):
            self.hub.dispatch(AnswerDelta(tenant_id=ev.tenant_id, query_id=q.query_id, seq=seq, text=text))
            await asyncio.sleep(0.005)
        self.hub.dispatch(answered(ev.tenant_id, q.query_id, q.caller.subject))


def answered(tenant: str, qid: str, subject: str) -> QueryAnswered:
    return QueryAnswered(
        tenant_id=tenant,
        query_id=qid,
        subject=subject,
        answer="The cafeteria opens at eight [1]",
        citations=(CITE,),
        model="stub",
        timings_ms={"retrieval": 3.0},
    )


def bearer(
    tenant: str = "acme", user: str = "alice", groups: tuple[str, ...] = ("finance",), **kw: Any
) -> dict:
    return {"Authorization": f"Bearer {mint_token(SETTINGS.auth, tenant, user, groups, **kw)}"}


ALICE = bearer()


@dataclass
class Env:
    app: FastAPI
    client: httpx.AsyncClient
    pub: RecordingPublisher
    hub: AnswerHub
    lag: StaticLag


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    pub, hub, lag = RecordingPublisher(), AnswerHub(), StaticLag()
    pub.hub = hub
    app = create_app(SETTINGS, publisher=pub, hub=hub, lag_probe=lag, lag_interval_s=3600)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield Env(app, client, pub, hub, lag)


async def submit(env: Env, headers: dict | None = None, **body: Any) -> httpx.Response:
    return await env.client.post(
        "/v1/queries",
        json={"question": "When does the cafeteria open?", **body},
        headers=ALICE if headers is None else headers,
    )


async def test_submit_publishes_identity_from_the_credential_only(env: Env) -> None:
    r = await submit(env)
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == body["status_url"] == f"/v1/queries/{body['query_id']}"
    assert body["status"] == "pending" and body["top_k"] == SETTINGS.serving.interactive_top_k
    [ev] = env.pub.events
    assert ev.tenant_id == "acme" and ev.query.query_id == body["query_id"]
    assert ev.query.caller.subject == "alice"
    assert set(ev.query.caller.groups) == {"finance", "everyone"}
    assert ev.query.request_class == "interactive" and ev.query.requested_at is not None


async def test_request_class_sets_top_k_and_deadline(env: Env) -> None:
    s = SETTINGS.serving
    batch = (await submit(env, request_class="batch")).json()
    capped = (await submit(env, top_k=10_000)).json()
    explicit = (await submit(env, top_k=3)).json()
    assert (batch["top_k"], capped["top_k"], explicit["top_k"]) == (s.batch_top_k, s.max_top_k, 3)
    b, i = env.pub.events[0].query, env.pub.events[2].query
    assert (b.deadline_at - i.deadline_at).total_seconds() == pytest.approx(
        s.batch_deadline_s - s.interactive_deadline_s, abs=2
    )


async def test_status_pending_then_answered(env: Env) -> None:
    qid = (await submit(env)).json()["query_id"]
    r = await env.client.get(f"/v1/queries/{qid}", headers=ALICE)
    assert r.status_code == 200 and r.json()["status"] == "pending"
    env.hub.dispatch(AnswerDelta(tenant_id="acme", query_id=qid, seq=0, text="The cafe"))
    assert (await env.client.get(f"/v1/queries/{qid}", headers=ALICE)).json()["partial"] == "The cafe"
    env.hub.dispatch(answered("acme", qid, "alice"))
    body = (await env.client.get(f"/v1/queries/{qid}", headers=ALICE)).json()
    assert body["status"] == "answered"
    assert body["answer"]["citations"] == [CITE.model_dump()]
    assert (
        body["answer"]["timings_ms"]["retrieval"] == 3.0 and "gateway_total" in body["answer"]["timings_ms"]
    )


async def test_sse_streams_deltas_then_the_answer(env: Env) -> None:
    env.pub.auto_answer = True
    qid = (await submit(env)).json()["query_id"]
    r = await env.client.get(f"/v1/queries/{qid}/stream", headers=ALICE)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [e async for e in parse_sse(_lines(r.text))]
    kinds = [e.event for e in events]
    assert kinds == ["delta", "delta", "delta", "answer"]
    assert "".join(json.loads(e.data)["text"] for e in events[:3]) == "The cafeteria opens at eight [1]"
    assert [e.id for e in events] == ["0", "1", "2", "final"]
    assert json.loads(events[-1].data)["citations"][0]["chunk_id"] == "c-1"
    # Resuming after seq 1 replays only what follows.
    again = await env.client.get(f"/v1/queries/{qid}/stream", headers={**ALICE, "Last-Event-ID": "1"})
    assert [e.id async for e in parse_sse(_lines(again.text))] == ["2", "final"]


async def _lines(text: str) -> AsyncIterator[str]:
    for line in text.splitlines():
        yield line


async def test_blocking_answer(env: Env) -> None:
    env.pub.auto_answer = True
    r = await env.client.post("/v1/answer", json={"question": "When does it open?"}, headers=ALICE)
    assert r.status_code == 200, r.text
    assert r.json()["answer"].startswith("The cafeteria") and r.json()["abstained"] is False


async def test_failed_query_is_502_and_status_failed(env: Env) -> None:
    async def fail(ev: QueryRequested) -> None:
        env.hub.dispatch(
            QueryFailed(
                tenant_id="acme",
                query_id=ev.query.query_id,
                subject="alice",
                stage="generation",
                reason="model down",
            )
        )

    env.pub.auto_answer, env.pub.play = True, fail  # type: ignore[method-assign]
    r = await env.client.post("/v1/answer", json={"question": "q"}, headers=ALICE)
    cid = env.pub.events[-1].correlation_id
    assert r.status_code == 502 and r.json()["error"] == {
        "code": "query_failed",
        "message": "the query could not be answered",
        "correlation_id": cid,
    }
    assert "model down" not in r.text
    qid = env.pub.events[-1].query.query_id
    st = (await env.client.get(f"/v1/queries/{qid}", headers=ALICE)).json()
    assert st["status"] == "failed" and st["error"] == r.json()["error"]


async def test_deadline_gives_504() -> None:
    s = SETTINGS.model_copy(
        update={"serving": SETTINGS.serving.model_copy(update={"interactive_deadline_s": 0.2})}
    )
    pub, hub = RecordingPublisher(), AnswerHub()
    app = create_app(s, publisher=pub, hub=hub, lag_probe=StaticLag())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        r = await c.post("/v1/answer", json={"question": "q"}, headers=ALICE)
        assert r.status_code == 504 and "deadline" in r.json()["detail"]
        qid = pub.events[0].query.query_id
        stream = await c.get(f"/v1/queries/{qid}/stream", headers=ALICE)
        assert [e.event async for e in parse_sse(_lines(stream.text))] == ["error"]
        assert hub.inflight() == 0


async def test_other_tenant_or_user_gets_404(env: Env) -> None:
    qid = (await submit(env)).json()["query_id"]
    env.hub.dispatch(answered("acme", qid, "alice"))
    for who in (bearer("globex", "alice"), bearer("acme", "bob"), {"X-API-Key": "k-acme"}):
        for path in (f"/v1/queries/{qid}", f"/v1/queries/{qid}/stream"):
            r = await env.client.get(path, headers=who)
            assert r.status_code == 404 and r.json()["detail"] == "no such query", (who, path)
            assert r.json()["error"]["code"] == "not_found", (who, path)
    assert (await env.client.get("/v1/queries/nope", headers=ALICE)).status_code == 404
    assert (await env.client.get(f"/v1/queries/{qid}", headers=ALICE)).status_code == 200


async def test_foreign_answer_events_cannot_be_read_across_tenants(env: Env) -> None:
    qid = (await submit(env)).json()["query_id"]
    env.hub.dispatch(answered("globex", qid, "alice"))  # same id, other tenant: ignored
    assert (await env.client.get(f"/v1/queries/{qid}", headers=ALICE)).json()["status"] == "pending"


async def test_api_key(env: Env) -> None:
    r = await submit(env, headers={"X-API-Key": "k-acme"})
    assert r.status_code == 202
    caller = env.pub.events[0].query.caller
    assert (caller.subject, caller.auth_method, set(caller.groups)) == ("svc", "api_key", {"ops", "everyone"})


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic YWxpY2U6cHc="},
        bearer(ttl_s=-3600),
        {"X-API-Key": "wrong"},
    ],
    ids=["none", "garbage", "basic", "expired", "bad-key"],
)
async def test_unauthenticated_is_401(env: Env, headers: dict) -> None:
    for r in (
        await submit(env, headers=headers),
        await env.client.post("/v1/answer", json={"question": "q"}, headers=headers),
        await env.client.get("/v1/queries/x", headers=headers),
        await env.client.get("/v1/queries/x/stream", headers=headers),
    ):
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert env.pub.events == []


async def test_too_large_is_413_before_parsing(env: Env) -> None:
    big = json.dumps({"question": "x" * 2000}).encode()
    r = await env.client.post(
        "/v1/queries", content=big, headers={**ALICE, "content-type": "application/json"}
    )
    assert r.status_code == 413 and "bytes" in r.json()["detail"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        yield b'{"question": "'
        for _ in range(20):
            yield b"y" * 100
        yield b'"}'

    r = await env.client.post(
        "/v1/queries", content=chunked(), headers={**ALICE, "content-type": "application/json"}
    )
    assert r.status_code == 413
    r = await env.client.post("/v1/queries", content=b"{not json" * 200, headers=ALICE)  # malformed AND big
    assert r.status_code == 413
    r = await submit(env, question="q" * 51)
    assert r.status_code == 413 and "characters" in r.json()["detail"]
    r = await env.client.post("/v1/answer", json={"question": "q" * 51}, headers=ALICE)
    assert r.status_code == 413
    assert env.pub.events == []


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"query": "missing question"}',
        b'{"question": "q", "tenant": "globex"}',
        b'{"question": "q", "user": "root"}',
        b'{"question": "   "}',
        b'{"question": "q", "request_class": "urgent"}',
        b'{"question": "q", "top_k": 0}',
        b'{"question": 42}',
    ],
)
async def test_invalid_body_is_422(env: Env, content: bytes) -> None:
    for path in ("/v1/queries", "/v1/answer"):
        r = await env.client.post(
            path, content=content, headers={**ALICE, "content-type": "application/json"}
        )
        assert r.status_code == 422, (content, r.text)
    assert env.pub.events == []


async def test_429_on_inflight_with_retry_after(env: Env) -> None:
    for _ in range(SETTINGS.serving.max_inflight):
        assert (await submit(env)).status_code == 202
    r = await submit(env)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert (await env.client.post("/v1/answer", json={"question": "q"}, headers=ALICE)).status_code == 429
    assert len(env.pub.events) == SETTINGS.serving.max_inflight
    env.hub.dispatch(answered("acme", env.pub.events[0].query.query_id, "alice"))
    assert (await submit(env)).status_code == 202


async def test_batch_yields_first_under_inflight(env: Env) -> None:
    for _ in range(SETTINGS.serving.max_inflight // 2):
        assert (await submit(env)).status_code == 202
    assert (await submit(env, request_class="batch")).status_code == 429
    assert (await submit(env)).status_code == 202


async def test_429_on_consumer_lag(env: Env) -> None:
    env.lag.value = SETTINGS.serving.max_lag * 3
    await env.app.state.gateway.admission.refresh()
    r = await submit(env)
    assert r.status_code == 429 and int(r.headers["retry-after"]) == 3
    assert env.pub.events == []
    env.lag.value = 0
    await env.app.state.gateway.admission.refresh()
    assert (await submit(env)).status_code == 202


async def test_publish_failure_is_503_and_not_kept(env: Env) -> None:
    env.pub.fail = True
    r = await submit(env)
    assert r.status_code == 503 and env.hub.records == {}


async def test_health_ready_metrics(env: Env) -> None:
    assert (await env.client.get("/healthz")).json() == {"status": "ok", "checks": {}}
    ready = await env.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"started": True, "answer_hub": True}
    await submit(env, headers={})
    await submit(env)
    text = (await env.client.get("/metrics")).text
    assert 'ragstream_gateway_requests_total{route="/v1/queries",status="401"}' in text
    assert 'ragstream_gateway_rejections_total{reason="unauthorized"}' in text
    assert "ragstream_gateway_queries_accepted_total" in text
    assert "/v1/queries/" not in text.replace('route="/v1/queries/{query_id}', "")  # no ids in labels


async def test_not_ready_before_start() -> None:
    hub = AnswerHub()
    hub.ready = False
    app = create_app(SETTINGS, publisher=RecordingPublisher(), hub=hub, lag_probe=StaticLag())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "starting"
