"""Gateway attacks in memory: one tenant's burst, hostile `Last-Event-ID`s, and leaking internal errors.

- fair admission: a tenant at `serving.tenant_max_inflight` gets 429 + Retry-After (`tenant_inflight`)
  while other tenants are admitted; under serving lag a tenant over its fair share is refused first
  (`tenant_lag`); the global limits stay the last resort;
- `Last-Event-ID` is parsed before the stream starts: anything but ASCII digits (<= 18) or `final` is a 400
  in the error shape, never a 200 with an empty body;
- a failing model server (the real generation handler and HTTP model client against a refused or a
  hanging-up port) shows clients an error code and the correlation id, never the exception's class or text.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import context as otel_context
from pydantic import SecretStr

from consumers.serving.generation import Generator, handler_for
from gateway.app import create_app
from gateway.auth import mint_token
from gateway.backpressure import StaticLag
from gateway.client import parse_sse
from gateway.hub import AnswerHub
from ragstream.adapters.llm import OpenAIChat
from ragstream.runtime.worker import Inbound, Outbound
from ragstream.settings import AuthSettings, LLMSettings, ServingSettings, Settings
from schemas.serving import AnswerDelta, Passage, QueryFailed, QueryRequested, QueryReranked

pytestmark = pytest.mark.component

SERVING = ServingSettings(max_inflight=256, max_lag=1000, tenant_max_inflight=64, tenant_lag_share=0.25)
SETTINGS = Settings(
    auth=AuthSettings(jwt_secret=SecretStr(secrets.token_urlsafe(48))),
    serving=SERVING,
)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# What must never reach a client: exception class names and their texts.
LEAKS = ("Error", "Exception", "peer closed", "Connect", "refused", "127.0.0.1", "Traceback", "httpx")


def auth(tenant: str, user: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SETTINGS.auth, tenant, user, ('finance',))}"}


class Publisher:
    """Records requests; `play` (when set) stands for the serving pipeline."""

    def __init__(self) -> None:
        self.events: list[QueryRequested] = []
        self.play: Callable[[QueryRequested], Awaitable[None]] | None = None
        self.fail = False

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, event: QueryRequested) -> None:
        if self.fail:
            raise ConnectionError("broker 10.0.0.7:9092 down")
        self.events.append(event)
        if self.play is not None:
            play = self.play
            asyncio.get_running_loop().call_later(0.01, lambda: asyncio.create_task(play(event)))


@dataclass
class Env:
    app: FastAPI
    client: httpx.AsyncClient
    pub: Publisher
    hub: AnswerHub
    lag: StaticLag

    async def submit(self, tenant: str, **body: Any) -> httpx.Response:
        return await self.client.post(
            "/v1/queries", json={"question": "When does the cafeteria open?", **body}, headers=auth(tenant)
        )

    async def set_lag(self, value: int) -> None:
        self.lag.value = value
        await self.app.state.gateway.admission.refresh()


async def _env(settings: Settings) -> AsyncIterator[Env]:
    pub, hub, lag = Publisher(), AnswerHub(), StaticLag()
    app = create_app(settings, publisher=pub, hub=hub, lag_probe=lag, lag_interval_s=3600)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield Env(app, client, pub, hub, lag)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async for e in _env(SETTINGS):
        yield e


def assert_error_shape(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    err = body["error"]
    assert err["code"] == code and err["message"] and UUID.match(err["correlation_id"]), body
    assert set(err) == {"code", "message", "correlation_id"} and body["detail"] == err["message"]
    return err


def rejections(text: str, reason: str) -> float:
    m = re.search(rf'^ragstream_gateway_rejections_total\{{reason="{reason}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


# --- fair admission ----------------------------------------------------------------------------------------


async def test_one_tenants_256_pending_queries_do_not_refuse_another_tenant(env: Env) -> None:
    before = rejections((await env.client.get("/metrics")).text, "tenant_inflight")
    codes = [(await env.submit("tenant-a")).status_code for _ in range(256)]
    assert codes.count(202) == SERVING.tenant_max_inflight and codes.count(429) == 256 - 64
    assert codes[:64] == [202] * 64
    r = await env.submit("tenant-a")
    err = assert_error_shape(r, 429, "tenant_inflight")
    assert int(r.headers["retry-after"]) >= 1 and r.headers["x-correlation-id"] == err["correlation_id"]
    assert "64" not in r.json()["detail"]  # no load figures in the body
    blocking = await env.client.post("/v1/answer", json={"question": "q"}, headers=auth("tenant-a"))
    assert blocking.status_code == 429 and blocking.headers["retry-after"]
    # Tenant B is admitted while A is at its limit.
    assert (await env.submit("tenant-b")).status_code == 202
    assert env.hub.inflight_by_tenant() == {"tenant-a": 64, "tenant-b": 1}
    assert len(env.pub.events) == 65  # nothing refused was published
    text = (await env.client.get("/metrics")).text
    assert rejections(text, "tenant_inflight") - before == 256 - 64 + 2
    # A final frees a slot of A's.
    a_query = next(e for e in env.pub.events if e.tenant_id == "tenant-a")
    env.hub.dispatch(
        QueryFailed(tenant_id="tenant-a", query_id=a_query.query.query_id, stage="generation", reason="x")
    )
    assert (await env.submit("tenant-a")).status_code == 202


async def test_batch_queries_of_a_tenant_yield_at_half_its_limit(env: Env) -> None:
    for _ in range(SERVING.tenant_max_inflight // 2):
        assert (await env.submit("tenant-a")).status_code == 202
    r = await env.submit("tenant-a", request_class="batch")
    assert_error_shape(r, 429, "tenant_inflight")
    assert (await env.submit("tenant-a")).status_code == 202


async def test_under_lag_the_tenant_over_its_share_is_refused_first(env: Env) -> None:
    for _ in range(10):
        assert (await env.submit("tenant-a")).status_code == 202
    assert (await env.submit("tenant-b")).status_code == 202
    await env.set_lag(
        int(SERVING.tenant_lag_share * SERVING.max_lag) + 100
    )  # over the tenant share, under max
    r = await env.submit("tenant-a")
    assert_error_shape(r, 429, "tenant_lag")
    assert int(r.headers["retry-after"]) >= 1
    assert (await env.submit("tenant-b")).status_code == 202  # 2 in flight, under the share of 12/2
    assert (await env.submit("tenant-c")).status_code == 202  # none in flight
    # Global lag remains the last resort: everyone waits.
    await env.set_lag(SERVING.max_lag * 3)
    for tenant in ("tenant-a", "tenant-b", "tenant-d"):
        r = await env.submit(tenant)
        assert r.json()["error"]["code"] in ("lag", "tenant_lag") and r.status_code == 429
    assert r.json()["error"]["code"] == "lag" and r.headers["retry-after"] == "3"
    await env.set_lag(0)
    assert (await env.submit("tenant-a")).status_code == 202


async def test_the_only_tenant_is_not_refused_for_its_share_under_lag(env: Env) -> None:
    for _ in range(5):
        assert (await env.submit("tenant-a")).status_code == 202
    await env.set_lag(int(SERVING.tenant_lag_share * SERVING.max_lag) + 1)
    assert (await env.submit("tenant-a")).status_code == 202


async def test_global_inflight_limit_is_the_last_resort() -> None:
    serving = SERVING.model_copy(update={"max_inflight": 6, "tenant_max_inflight": 4})
    async for env in _env(SETTINGS.model_copy(update={"serving": serving})):
        for tenant in ("tenant-a", "tenant-b"):
            for _ in range(3):
                assert (await env.submit(tenant)).status_code == 202
        assert_error_shape(await env.submit("tenant-c"), 429, "inflight")


# --- Last-Event-ID -----------------------------------------------------------------------------------------


async def _answered_query(env: Env) -> str:
    qid = (await env.submit("acme")).json()["query_id"]
    for seq, text in enumerate(["The cafe", "teria opens", " at eight"]):
        env.hub.dispatch(AnswerDelta(tenant_id="acme", query_id=qid, seq=seq, text=text))
    env.hub.dispatch(
        QueryFailed(
            tenant_id="acme", query_id=qid, subject="alice", stage="gateway", reason="deadline exceeded"
        )
    )
    return qid


@pytest.mark.parametrize(
    "value",
    [
        "²".encode(),  # superscript two: str.isdigit() says yes, int() says no
        "٣".encode(),  # Arabic-Indic three: int() would take it
        b"5" * 5000,
        b"9" * 19,
        b"-1",
        b"+1",
        b"1.5",
        b"0x10",
        b"1_000",
        b" 1 2",
        b"finally",
    ],
    ids=[
        "superscript",
        "arabic-indic",
        "5000-digits",
        "19-digits",
        "negative",
        "plus",
        "float",
        "hex",
        "underscore",
        "inner-space",
        "word",
    ],
)
async def test_bad_last_event_id_is_400_before_the_stream(env: Env, value: bytes) -> None:
    qid = await _answered_query(env)
    r = await env.client.get(
        f"/v1/queries/{qid}/stream",
        headers={**auth("acme"), "Last-Event-ID": value},  # type: ignore[dict-item]
    )
    err = assert_error_shape(r, 400, "bad_request")
    assert r.headers["content-type"].startswith("application/json")
    assert "Last-Event-ID" in err["message"] and "5555" not in r.text


async def _ids(env: Env, qid: str, last: str | None) -> list[str | None]:
    headers = auth("acme") if last is None else {**auth("acme"), "Last-Event-ID": last}
    r = await env.client.get(f"/v1/queries/{qid}/stream", headers=headers)
    assert r.status_code == 200, r.text

    async def lines() -> AsyncIterator[str]:
        for line in r.text.splitlines():
            yield line

    return [e.id async for e in parse_sse(lines())]


async def test_good_last_event_ids_resume(env: Env) -> None:
    qid = await _answered_query(env)
    assert await _ids(env, qid, None) == ["0", "1", "2", "final"]
    assert await _ids(env, qid, "") == ["0", "1", "2", "final"]
    assert await _ids(env, qid, "0") == ["1", "2", "final"]
    assert await _ids(env, qid, "9" * 18) == ["final"]
    assert await _ids(env, qid, "final") == ["final"]


async def test_a_foreign_query_stays_404_whatever_the_last_event_id(env: Env) -> None:
    qid = await _answered_query(env)
    r = await env.client.get(
        f"/v1/queries/{qid}/stream",
        headers={**auth("globex"), "Last-Event-ID": "²".encode()},  # type: ignore[dict-item]
    )
    assert_error_shape(r, 404, "not_found")


# --- no internals to clients -------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def hanging_up_port() -> AsyncIterator[int]:
    """A 'model server' that starts answering, then hangs up mid-body (httpx: RemoteProtocolError,
    "peer closed connection without sending complete message body")."""

    async def hang_up(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        length = re.search(rb"content-length: *(\d+)", head, re.I)
        await r.readexactly(int(length.group(1)) if length else 0)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 1000\r\n\r\ndata: {")
        await w.drain()
        w.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def _generation_pipeline(env: Env, port: int, finals: list[QueryFailed]) -> None:
    """The real generation handler (HTTP model client on `port`) plays every accepted query."""
    llm = OpenAIChat(LLMSettings(base_url=f"http://127.0.0.1:{port}/v1", timeout_s=5))
    gen = Generator(store=None, llm=llm, cfg=SERVING)

    async def send(outs: Any) -> None:
        for o in outs:
            env.hub.dispatch(o.event)

    handle = handler_for(gen, send)

    async def play(ev: QueryRequested) -> None:
        passage = Passage(
            chunk_id="c-1",
            document_id="handbook.md",
            text="The cafeteria opens at eight.",
            source_version="v1",
            acl_groups=("everyone",),
        )
        reranked = QueryReranked(
            **ev.caused(producer="rerank"),
            query=ev.query,
            passages=(passage,),
            generation="",
            reranker="none",
        )
        outs: list[Outbound] = await handle([Inbound(None, reranked, otel_context.get_current())])  # type: ignore[arg-type]
        for o in outs:
            assert isinstance(o.event, QueryFailed)
            finals.append(o.event)
            env.hub.dispatch(o.event)

    env.pub.play = play


def _no_leak(text: str, final: QueryFailed) -> None:
    for leak in (*LEAKS, final.reason, final.reason.split(":")[0]):
        assert leak not in text, (leak, text)


@pytest.mark.parametrize("server", ["refused", "hangs-up"])
async def test_failing_model_server_shows_code_and_correlation_id_only(
    env: Env, server: str, hanging_up_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    port = _closed_port() if server == "refused" else hanging_up_port
    finals: list[QueryFailed] = []
    _generation_pipeline(env, port, finals)
    r = await env.client.post("/v1/answer", json={"question": "When?"}, headers=auth("acme"))
    [final] = finals
    assert final.reason.split(":")[0] in ("ConnectError", "RemoteProtocolError")  # the internal detail
    err = assert_error_shape(r, 502, "query_failed")
    assert err["correlation_id"] == r.headers["x-correlation-id"] == env.pub.events[-1].correlation_id
    assert final.correlation_id == err["correlation_id"]  # the workers' logs and spans carry this id
    _no_leak(r.text, final)
    # The stream and the status of the same query: the same code and correlation id, nothing else.
    qid = env.pub.events[-1].query.query_id
    stream = await env.client.get(f"/v1/queries/{qid}/stream", headers=auth("acme"))
    assert stream.status_code == 200
    _no_leak(stream.text, final)

    async def lines() -> AsyncIterator[str]:
        for line in stream.text.splitlines():
            yield line

    [ev] = [e async for e in parse_sse(lines())]
    assert ev.event == "error" and json.loads(ev.data) == err
    status = await env.client.get(f"/v1/queries/{qid}", headers=auth("acme"))
    assert status.json()["error"] == err
    _no_leak(status.text, final)
    # The detail is in the logs, under the correlation id.
    logged = [rec.getMessage() for rec in caplog.records]
    assert any(final.reason in m and err["correlation_id"] in m for m in logged), logged


async def test_publish_failure_does_not_name_the_exception(env: Env) -> None:
    env.pub.fail = True
    r = await env.submit("acme")
    assert_error_shape(r, 503, "unavailable")
    assert "ConnectionError" not in r.text and "10.0.0.7" not in r.text and "broker" not in r.text


async def test_auth_failures_carry_the_fixed_message_only(env: Env) -> None:
    expired = mint_token(SETTINGS.auth, "acme", "alice", ttl_s=-3600)
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Bearer {expired}"}):
        r = await env.client.post("/v1/queries", json={"question": "q"}, headers=headers)
        err = assert_error_shape(r, 401, "unauthorized")
        assert err["message"] == "missing, invalid or expired credential"
        assert r.headers["www-authenticate"].startswith("Bearer")


async def test_every_response_names_its_correlation_id(env: Env) -> None:
    a = await env.client.get("/healthz")
    b = await env.client.get("/healthz")
    assert (
        UUID.match(a.headers["x-correlation-id"])
        and a.headers["x-correlation-id"] != b.headers["x-correlation-id"]
    )
    r = await env.client.get("/v1/queries/nope", headers={**auth("acme"), "X-Correlation-ID": "forged"})
    assert_error_shape(r, 404, "not_found")
    assert r.headers["x-correlation-id"] == r.json()["error"]["correlation_id"] != "forged"
    accepted = await env.submit("acme")
    assert env.pub.events[-1].correlation_id == accepted.headers["x-correlation-id"]
