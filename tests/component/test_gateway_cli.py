"""`ragstream token` and `ragstream ask` against a real uvicorn gateway whose Kafka side is faked."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from application.cli.gateway import ask_via_gateway
from application.cli.main import app as cli
from gateway.app import create_app
from gateway.auth import Authenticator
from gateway.hub import AnswerHub
from gateway.server import serve_in_process
from ragstream.settings import AuthSettings, Settings
from schemas.serving import AnswerDelta, Citation, QueryAnswered, QueryRequested

pytestmark = pytest.mark.component
S = Settings(auth=AuthSettings(jwt_secret=SecretStr(secrets.token_urlsafe(48))))


class PlayingPublisher:
    """Answers every query through the hub: three deltas, then a final with one citation."""

    def __init__(self, hub: AnswerHub) -> None:
        self.hub = hub
        self.events: list[QueryRequested] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, event: QueryRequested) -> None:
        self.events.append(event)
        asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(self._play(event)))

    async def _play(self, ev: QueryRequested) -> None:
        qid, tenant = ev.query.query_id, ev.tenant_id
        for seq, text in enumerate(("Tenants ", "are isolated ", "[1]")):
            self.hub.dispatch(AnswerDelta(tenant_id=tenant, query_id=qid, seq=seq, text=text))
            await asyncio.sleep(0.02)
        cite = Citation(
            citation_id="1", document_id="mt.html", chunk_id="c-9", source_version="v1", title="MT"
        )
        self.hub.dispatch(
            QueryAnswered(
                tenant_id=tenant,
                query_id=qid,
                subject=ev.query.caller.subject,
                answer="Tenants are isolated [1]",
                citations=(cite,),
                timings_ms={"retrieval": 1.0},
            )
        )


class NoLag:
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def lag(self) -> int:
        return 0


@pytest.fixture
async def gateway_url() -> AsyncIterator[tuple[str, PlayingPublisher]]:
    hub = AnswerHub()
    pub = PlayingPublisher(hub)
    async with serve_in_process(create_app(S, publisher=pub, hub=hub, lag_probe=NoLag())) as url:
        yield url, pub


@pytest.fixture(autouse=True)
def _cli_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI's settings are this module's (its own signing key), not the local stack's.
    monkeypatch.setattr("application.cli.gateway.settings", lambda: S)


def test_token_command_mints_a_verifiable_token() -> None:
    r = CliRunner().invoke(
        cli, ["token", "--tenant", "acme", "--user", "alice", "-g", "finance", "--ttl", "60"]
    )
    assert r.exit_code == 0, r.output
    p = Authenticator(S.auth).verify_token(r.output.strip().splitlines()[-1])
    assert (p.tenant_id, p.subject, set(p.groups)) == ("acme", "alice", {"finance", "everyone"})


async def test_ask_via_gateway_streams_over_http(gateway_url: tuple[str, PlayingPublisher]) -> None:
    url, pub = gateway_url
    seen: list[str] = []
    out = await ask_via_gateway(
        S,
        "How are tenants isolated?",
        tenant="acme",
        user="alice",
        groups=("ops",),
        url=url,
        on_delta=seen.append,
    )
    assert seen == ["Tenants ", "are isolated ", "[1]"]
    assert out["answer"] == "Tenants are isolated [1]" and out["abstained"] is False and out["error"] is None
    assert out["citations"][0]["chunk_id"] == "c-9" and out["query_id"] == pub.events[0].query.query_id
    assert {"retrieval", "gateway_total", "client_first_delta", "client_total"} <= set(out["timings"])
    assert pub.events[0].query.request_class == "batch"
    assert set(pub.events[0].query.caller.groups) == {"ops", "everyone"}


async def test_ask_command_json_last_line(gateway_url: tuple[str, PlayingPublisher]) -> None:
    url, pub = gateway_url
    args = ["ask", "How are tenants isolated?", "--tenant", "acme", "--user", "alice", "--url", url, "--json"]
    r = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert r.exit_code == 0, r.output
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(last) >= {"answer", "citations", "abstained", "query_id", "timings"}
    assert last["answer"] == "Tenants are isolated [1]" and last["query_id"] == pub.events[0].query.query_id
    assert pub.events[0].query.request_class == "interactive"


async def test_ask_command_streams_text(gateway_url: tuple[str, PlayingPublisher]) -> None:
    url, _ = gateway_url
    args = ["ask", "How are tenants isolated?", "--tenant", "acme", "--user", "alice", "--url", url]
    r = await asyncio.to_thread(CliRunner().invoke, cli, args)
    assert r.exit_code == 0, r.output
    assert "Tenants are isolated [1]" in r.stdout and "mt.html" not in r.stdout.split("[1]")[0]
    assert "MT" in r.stdout


def test_app_is_built_outside_an_event_loop() -> None:
    """`gateway serve` builds the app before uvicorn starts its loop: no Kafka client may be made yet."""
    app = create_app(S)
    assert app.openapi()["info"]["title"] == "ragstream gateway"
