"""Publish -> index -> ask over a SASL_SSL broker with SCRAM-SHA-512, every process connecting from settings.

A second, throwaway broker (own stack home under the test's tmp dir, own ports) is started by the stack's
KafkaService with `stack.kafka_sasl_ssl_port`: a CA and broker certificate generated on the fly, the SCRAM
user created at format time with Kafka's StorageTool. The ingestion and serving workers (LocalPipeline),
the gateway (create_app, in process) and the CLI (`ragstream publish --wait`, a subprocess configured only
by RAGSTREAM_KAFKA__* variables) all reach it over its SASL_SSL listener; the index lives in the running
stack's Weaviate under this test's own generation. A wrong password fails fast with an authentication
error (library and CLI), never a hang, and no output carries the password. The broker is stopped by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from application.stack.home import stack_home
from application.stack.process import ProcessRecord, is_alive, spawn, stop, tail
from application.stack.secrets import sasl_ssl_kafka
from application.stack.services import KafkaService
from gateway.app import create_app
from gateway.auth import mint_token
from gateway.client import GatewayClient
from gateway.server import serve_in_process
from ragstream.adapters.embedder import SentenceTransformerEmbedder
from ragstream.adapters.llm import ExtractiveStub
from ragstream.runtime import kafka
from ragstream.runtime.deps import Deps
from ragstream.settings import KafkaSettings, Settings, StackSettings
from tests.support.pipeline import Harness, isolated_pipeline_settings

pytestmark = pytest.mark.integration
ALL = ("normalizer", "chunker", "embedder", "retrieval", "rerank", "generation")
CLI = [sys.executable, "-m", "application.cli.main"]
START_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(svc: KafkaService, rec: ProcessRecord) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not svc.healthy():
        if not is_alive(rec) or time.monotonic() > deadline:
            raise AssertionError("secured broker did not start:\n" + "\n".join(tail(rec.log, 30)))
        time.sleep(0.2)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaSettings]:
    """Client settings for a second broker's SASL_SSL listener; the broker is stopped by pid afterwards."""
    home = tmp_path_factory.mktemp("sasl-stack")
    stack = StackSettings(
        home=home,
        kafka_port=_free_port(),
        kafka_controller_port=_free_port(),
        kafka_sasl_ssl_port=_free_port(),
        kafka_heap="-Xms128m -Xmx384m",
    )
    s = Settings(stack=stack)
    svc = KafkaService(s, stack_home(s))
    svc.prepare()
    spec = svc.spec()
    rec = spawn(
        "kafka", spec.argv, env=spec.env, cwd=spec.cwd, log=home / "kafka.log", port=spec.port, version="test"
    )
    try:
        _wait_healthy(svc, rec)
        yield sasl_ssl_kafka(s)
    finally:
        stop(rec)


@pytest.fixture(scope="module")
def fp32_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    """The reference backend directly: the `auto` start-up probe (about a minute) would pick a backend
    whose vectors match these anyway, and this test is about the connection, not the model."""
    return SentenceTransformerEmbedder(settings.embedding.model_copy(update={"backend": "torch-fp32"}))


def _cli_env(k: KafkaSettings, home: Path, password: str | None = None) -> dict[str, str]:
    """A CLI process configured for the secured broker by environment variables only."""
    assert k.sasl_password is not None and k.ssl_cafile is not None
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAGSTREAM_KAFKA__")}
    fields = {
        "BOOTSTRAP_SERVERS": k.bootstrap_servers,
        "TOPIC_PREFIX": k.topic_prefix,
        "DEFAULT_PARTITIONS": str(k.default_partitions),
        "SECURITY_PROTOCOL": "SASL_SSL",
        "SSL_CAFILE": str(k.ssl_cafile),
        "SASL_MECHANISM": "SCRAM-SHA-512",
        "SASL_USERNAME": str(k.sasl_username),
        "SASL_PASSWORD": password or k.sasl_password.get_secret_value(),
    }
    env.update({f"RAGSTREAM_KAFKA__{key}": value for key, value in fields.items()})
    env["RAGSTREAM_STACK__HOME"] = str(home)  # the publish manifest stays in the test's tmp dir
    return env


def _publish(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    argv = [*CLI, "publish", str(folder), "--tenant", "acme", "--wait", "--timeout", "60", "--json"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


async def test_publish_index_ask_over_sasl_ssl_scram(
    settings: Settings, secured: KafkaSettings, fp32_embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    base = isolated_pipeline_settings(settings, uuid.uuid4().hex[:10])  # own generation (index)
    k = secured.model_copy(update={"topic_prefix": base.kafka.topic_prefix, "default_partitions": 2})
    s = base.model_copy(update={"kafka": k})
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "handbook.md").write_text("# Handbook\n\nThe acme cafeteria opens at eight in the morning.")
    async with Harness(s, fp32_embedder, ALL, deps=Deps(s, llm=ExtractiveStub()), tmp=tmp_path) as h:
        done = await asyncio.to_thread(_publish, folder, _cli_env(k, tmp_path / "cli-stack"))
        assert done.returncode == 0, done.stderr[-2000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["new"] == 1 and result["searchable"] == result["waited_for"] == 1, result
        assert h.store.get_state("acme", "handbook.md") is not None
        async with (
            serve_in_process(create_app(s)) as url,
            GatewayClient(url, mint_token(s.auth, "acme", "alice")) as client,
        ):
            answer = await client.ask("When does the acme cafeteria open?")
        assert answer.final_event == "answer", answer.final
        assert "eight" in answer.final["answer"] and not answer.final["abstained"]
        assert {c["document_id"] for c in answer.final["citations"]} == {"handbook.md"}
    password = k.sasl_password.get_secret_value() if k.sasl_password else ""
    assert password and password not in done.stdout + done.stderr


async def test_wrong_password_is_a_prompt_authentication_error(
    secured: KafkaSettings, tmp_path: Path
) -> None:
    wrong = "not-the-password-" + uuid.uuid4().hex
    bad = secured.model_copy(update={"sasl_password": SecretStr(wrong)})
    producer = kafka.producer(bad)
    started = time.monotonic()
    with pytest.raises(kafka.KafkaAuthenticationError) as caught:
        async with asyncio.timeout(30):
            await producer.start()
    assert time.monotonic() - started < 15
    assert "refused SASL SCRAM-SHA-512 authentication as user 'ragstream'" in str(caught.value)
    assert wrong not in str(caught.value)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nanything")
    started = time.monotonic()
    done = await asyncio.to_thread(_publish, folder, _cli_env(secured, tmp_path / "cli-stack", wrong))
    assert done.returncode != 0 and time.monotonic() - started < 60
    assert "KafkaAuthenticationError" in done.stderr and "refused SASL" in done.stderr
    assert wrong not in done.stdout + done.stderr
