"""Security regression, gateway: tenant fairness and error shape through the real gateway on the real stack.

- Fairness: uvicorn + real Kafka (publisher, answer hub, lag probe), no serving consumers, so accepted queries
  stay pending. Tenant A at `serving.tenant_max_inflight` gets 429 + Retry-After while tenant B is admitted;
  once the real serving lag passes `tenant_lag_share * max_lag`, A (over its share) is refused and B, C are
  not. Nothing refused reaches the requests topic.
- Error shape: the six consumers in process, the generation worker's model server URL a closed local port
  (a real refused connection). The 502 body, the SSE error event and the status carry an error code and the
  correlation id only; no exception class or text. Hostile `Last-Event-ID`s are a 400 before any stream.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from gateway.app import create_app
from gateway.auth import mint_token
from gateway.client import parse_sse
from gateway.server import serve_in_process
from producers.publisher import DocumentPublisher
from ragstream.settings import Settings
from schemas.ingestion import Acl
from schemas.topics import QUERIES_REQUESTED
from tests.support.kafka import create_topics, isolated, read_all
from tests.support.pipeline import Harness, eventually, isolated_pipeline_settings

pytestmark = pytest.mark.integration
ALL = ("normalizer", "chunker", "embedder", "retrieval", "rerank", "generation")
DOC = "# Handbook\n\nThe acme cafeteria opens at eight in the morning and closes at three."
QUESTION = "When does the acme cafeteria open?"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LEAKS = ("Error", "Exception", "Connect", "refused", "127.0.0.1", "Traceback", "httpx", "errno", "Errno")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gw:
    s: Settings
    url: str

    def auth(self, tenant: str, user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(self.s.auth, tenant, user)}"}  # type: ignore[arg-type]


def _error(r: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and UUID.match(err["correlation_id"]), r.text
    assert r.headers["x-correlation-id"] == err["correlation_id"]
    return err


# --- fairness ----------------------------------------------------------------------------------------------


@pytest.fixture
async def bare_gateway(settings: Settings) -> AsyncIterator[Gw]:
    """The real gateway on its own topics; no consumers, so every accepted query stays in flight."""
    serving = settings.serving.model_copy(
        update={"max_inflight": 256, "max_lag": 40, "tenant_max_inflight": 8, "tenant_lag_share": 0.25}
    )
    s = isolated(settings, uuid.uuid4().hex[:10], serving=serving)
    await create_topics(s.kafka)
    async with serve_in_process(create_app(s, lag_interval_s=0.2)) as url:
        yield Gw(s, url)


async def _submit(c: httpx.AsyncClient, gw: Gw, tenant: str) -> httpx.Response:
    return await c.post("/v1/queries", json={"question": QUESTION}, headers=gw.auth(tenant))


async def test_a_tenants_burst_gets_its_own_429s(bare_gateway: Gw) -> None:
    gw = bare_gateway
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        codes = [(await _submit(c, gw, "tenant-a")).status_code for _ in range(32)]
        assert codes == [202] * 8 + [429] * 24
        r = await _submit(c, gw, "tenant-a")
        _error(r, 429, "tenant_inflight")
        assert int(r.headers["retry-after"]) >= 1
        assert (await _submit(c, gw, "tenant-b")).status_code == 202
        metrics = (await c.get("/metrics")).text
    assert re.search(r'ragstream_gateway_rejections_total\{reason="tenant_inflight"\} [1-9]', metrics)
    published = await read_all(gw.s.kafka, QUERIES_REQUESTED.name, expect=9)
    assert len(published) == 9  # only the admitted ones reached Kafka


async def test_under_real_lag_the_tenant_over_its_share_is_refused_first(bare_gateway: Gw) -> None:
    gw = bare_gateway
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        for _ in range(7):
            assert (await _submit(c, gw, "tenant-a")).status_code == 202
        for _ in range(4):
            assert (await _submit(c, gw, "tenant-b")).status_code == 202
        # 11 unconsumed requests: over 0.25 * 40 = 10, under max_lag 40; the probe samples every 0.2 s.
        await asyncio.sleep(1.0)
        r = await _submit(c, gw, "tenant-a")  # 7 of 11 among two tenants: over its share
        _error(r, 429, "tenant_lag")
        assert int(r.headers["retry-after"]) >= 1
        assert (await _submit(c, gw, "tenant-b")).status_code == 202  # 4 < 11 / 2
        assert (await _submit(c, gw, "tenant-c")).status_code == 202  # none in flight


# --- error shape with a real failing model server -------------------------------------------------------


@pytest.fixture(scope="module")
async def failing(
    settings: Settings, embedder, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gw]:
    llm = settings.llm.model_copy(
        update={"base_url": f"http://127.0.0.1:{_closed_port()}/v1", "timeout_s": 10}
    )
    s = isolated_pipeline_settings(settings, uuid.uuid4().hex[:10], llm=llm)
    async with Harness(s, embedder, ALL, tmp=tmp_path_factory.mktemp("sec-gw")) as h:
        async with DocumentPublisher(s) as pub:
            await pub.upsert(
                "acme",
                "handbook.md",
                content=DOC.encode(),
                mime_type="text/markdown",
                acl=Acl(groups=("everyone",)),
            )

        def indexed() -> bool:
            try:
                return h.store.has_tenant("acme") and h.store.get_state("acme", "handbook.md") is not None
            except Exception:
                return False

        await eventually(indexed)
        async with serve_in_process(create_app(s)) as url:
            yield Gw(s, url)


def _no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, (leak, text)


async def test_failing_model_server_shows_code_and_correlation_id_only(failing: Gw) -> None:
    gw = failing
    async with httpx.AsyncClient(base_url=gw.url, timeout=120) as c:
        r = await c.post("/v1/answer", json={"question": QUESTION}, headers=gw.auth("acme"))
        err = _error(r, 502, "query_failed")
        _no_leak(r.text)
        requests = await read_all(gw.s.kafka, QUERIES_REQUESTED.name, expect=1)
        [mine] = [e for e in (r.value for r in requests) if err["correlation_id"].encode() in (e or b"")]
        qid = json.loads(mine)["query"]["query_id"]
        stream = await c.get(f"/v1/queries/{qid}/stream", headers=gw.auth("acme"))
        assert stream.status_code == 200
        _no_leak(stream.text)

        async def lines() -> AsyncIterator[str]:
            for line in stream.text.splitlines():
                yield line

        [ev] = [e async for e in parse_sse(lines())]
        assert ev.event == "error" and json.loads(ev.data) == err
        status = await c.get(f"/v1/queries/{qid}", headers=gw.auth("acme"))
        assert status.json()["status"] == "failed" and status.json()["error"] == err
        _no_leak(status.text)
        # The 202 + SSE path of a fresh query: the error event carries that query's correlation id.
        accepted = await c.post("/v1/queries", json={"question": QUESTION}, headers=gw.auth("acme"))
        assert accepted.status_code == 202
        sse = await c.get(accepted.json()["stream_url"], headers=gw.auth("acme"))
        _no_leak(sse.text)
        assert accepted.headers["x-correlation-id"] in sse.text and '"code":"query_failed"' in sse.text


@pytest.mark.parametrize(
    "value", ["²".encode(), b"5" * 5000, b"-1", b"1e3"], ids=["sup2", "5000", "neg", "exp"]
)
async def test_hostile_last_event_id_is_400_not_an_empty_stream(failing: Gw, value: bytes) -> None:
    gw = failing
    async with httpx.AsyncClient(base_url=gw.url, timeout=60) as c:
        accepted = await c.post("/v1/queries", json={"question": QUESTION}, headers=gw.auth("acme"))
        assert accepted.status_code == 202
        r = await c.get(
            accepted.json()["stream_url"],
            headers={**gw.auth("acme"), "Last-Event-ID": value},  # type: ignore[dict-item]
        )
        _error(r, 400, "bad_request")
        assert r.headers["content-type"].startswith("application/json")
