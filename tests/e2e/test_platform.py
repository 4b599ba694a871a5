"""`ragstream up` on a fresh stack home: every process as deployed, then `publish --wait` and `ask` with no
other command, a killed consumer restarted by the supervisor, the first generation in the registry, and
`down` leaving nothing running. Its own Kafka and Weaviate (own home and ports, shared caches), so the stack
the rest of the suite uses is never restarted; answers come from the suite's model server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from application.stack.process import port_open
from ragstream.settings import Settings

pytestmark = pytest.mark.e2e
CORPUS = Path(__file__).resolve().parents[2] / "samples" / "demo-corpus"
PORTS = {
    "RAGSTREAM_STACK__KAFKA_PORT": 29092,
    "RAGSTREAM_STACK__KAFKA_CONTROLLER_PORT": 29093,
    "RAGSTREAM_STACK__WEAVIATE_HTTP_PORT": 28080,
    "RAGSTREAM_STACK__WEAVIATE_GRPC_PORT": 50251,
    "RAGSTREAM_STACK__WEAVIATE_GOSSIP_PORT": 27946,
    "RAGSTREAM_STACK__WEAVIATE_DATA_PORT": 27947,
    "RAGSTREAM_STACK__WEAVIATE_RAFT_PORT": 28300,
    "RAGSTREAM_STACK__WEAVIATE_RAFT_INTERNAL_RPC_PORT": 28301,
    "RAGSTREAM_STACK__GATEWAY_PORT": 28000,
    "RAGSTREAM_STACK__WORKER_METRICS_PORT": 29400,
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> dict[str, str]:
    taken = [p for p in PORTS.values() if port_open(p)]
    if taken:
        pytest.fail(f"ports the platform test needs are taken: {taken}")
    home = tmp_path_factory.mktemp("platform-home")
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAGSTREAM_")},
        **{k: str(v) for k, v in PORTS.items()},
        "RAGSTREAM_STACK__HOME": str(home),
        "RAGSTREAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{PORTS['RAGSTREAM_STACK__KAFKA_PORT']}",
        "RAGSTREAM_WEAVIATE__URL": f"http://127.0.0.1:{PORTS['RAGSTREAM_STACK__WEAVIATE_HTTP_PORT']}",
        "RAGSTREAM_WEAVIATE__GRPC_PORT": str(PORTS["RAGSTREAM_STACK__WEAVIATE_GRPC_PORT"]),
        # One model server for the whole suite: this platform answers with the stack's own.
        "RAGSTREAM_LLM__LOCAL_MODEL": "none",
        "RAGSTREAM_LLM__BASE_URL": settings.llm.base_url,
        "XDG_STATE_HOME": str(home.parent / "state"),
    }


def cli(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "application.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    )


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_up_publish_ask_restart_down(env: dict[str, str]) -> None:
    try:
        up = cli(env, "up", "--json")
        assert up.returncode == 0, up.stderr[-3000:]
        status = last_json(up)
        names = {p["name"] for p in status["processes"]}
        assert names == {
            f"worker:{n}"
            for n in ("normalizer", "chunker", "embedder", "retrieval", "rerank", "generation", "verifier")
        } | {"gateway"}
        assert status["healthy"] and all(p["pid"] for p in status["processes"])

        listed = cli(env, "generation", "list", "--json")
        assert listed.returncode == 0, listed.stderr[-2000:]
        assert last_json(listed)["live"] == "g0001", "the first start records the live generation"

        pub = cli(env, "publish", str(CORPUS), "--tenant", "t2", "--wait", "--json")
        assert pub.returncode == 0, pub.stderr[-2000:]
        assert last_json(pub)["searchable"] == 3, pub.stdout[-500:]

        ask = cli(
            env,
            "ask",
            "How does Weaviate keep one tenant's data away from another tenant?",
            "--tenant",
            "t2",
            "--user",
            "u",
            "--group",
            "everyone",
            "--class",
            "batch",
            "--json",
        )
        assert ask.returncode == 0, ask.stderr[-2000:]
        answer = last_json(ask)
        assert answer["error"] is None and answer["answer"].strip()
        assert {c["document_id"] for c in answer["citations"]} <= {p.name for p in CORPUS.iterdir()}

        victim = next(p for p in status["processes"] if p["name"] == "worker:chunker")
        os.kill(victim["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while True:
            now = last_json(cli(env, "status", "--json"))
            chunker = next(p for p in now["processes"] if p["name"] == "worker:chunker")
            if chunker["restarts"] >= 1 and chunker["healthy"] and chunker["pid"] != victim["pid"]:
                break
            assert time.monotonic() < deadline, chunker
            time.sleep(2)
        assert now["healthy"] and "lag" in chunker
    finally:
        down = cli(env, "down")
    assert down.returncode == 0, down.stderr[-2000:]
    assert not any(port_open(p) for p in PORTS.values()), "down leaves nothing listening"
    after = last_json(cli(env, "status", "--json"))
    assert not any(p["pid"] for p in after["processes"]) and not after["supervisor"]["alive"]
