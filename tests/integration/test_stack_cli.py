"""`ragstream stack` on an isolated second stack: idempotent up, crash noticed, clean down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "application.cli.main"]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RAGSTREAM_STACK__HOME": str(home),
            "RAGSTREAM_STACK__KAFKA_PORT": "29092",
            "RAGSTREAM_STACK__KAFKA_CONTROLLER_PORT": "29093",
            "RAGSTREAM_STACK__WEAVIATE_HTTP_PORT": "28080",
            "RAGSTREAM_STACK__WEAVIATE_GRPC_PORT": "28051",
            "RAGSTREAM_STACK__WEAVIATE_GOSSIP_PORT": "27946",
            "RAGSTREAM_STACK__WEAVIATE_DATA_PORT": "27947",
            "RAGSTREAM_STACK__WEAVIATE_RAFT_PORT": "28300",
            "RAGSTREAM_STACK__WEAVIATE_RAFT_INTERNAL_RPC_PORT": "28301",
            "RAGSTREAM_STACK__KAFKA_HEAP": "-Xms128m -Xmx384m",
            # Kafka and Weaviate only: the shared stack's model server keeps its port.
            "RAGSTREAM_LLM__LOCAL_MODEL": "none",
            "RAGSTREAM_LLM__LOCAL_PORT": "28090",
        }
    )
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "stack", *args], env=env, capture_output=True, text=True, timeout=300)


def _status(env: dict[str, str]) -> tuple[int, dict]:
    r = _cli(env, "status", "--json")
    return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])


def _pids(home: Path) -> dict[str, int]:
    return {k: v["pid"] for k, v in json.loads((home / "stack.json").read_text()).items()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_up_idempotent_crash_detected_down_clean(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    env = _env(home)
    try:
        first = _cli(env, "up", "--json")
        assert first.returncode == 0, first.stderr
        pids = _pids(home)
        second = _cli(env, "up", "--json")
        assert second.returncode == 0, second.stderr
        assert _pids(home) == pids, "a second `up` must not start new processes"
        assert "already running" in second.stderr

        rc, st = _status(env)
        assert rc == 0 and st["ok"] is True
        assert {s["service"]: s["state"] for s in st["services"]} == {
            "kafka": "running",
            "weaviate": "running",
        }
        assert all(s["healthy"] and s["version"] for s in st["services"])

        os.kill(pids["kafka"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pids["kafka"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        rc, st = _status(env)
        assert rc != 0 and st["ok"] is False
        kafka = next(s for s in st["services"] if s["service"] == "kafka")
        assert kafka["state"] == "crashed" and kafka["healthy"] is False

        # `up` restarts only what is down.
        again = _cli(env, "up", "--json")
        assert again.returncode == 0, again.stderr
        new = _pids(home)
        assert new["weaviate"] == pids["weaviate"] and new["kafka"] != pids["kafka"]
        logs = _cli(env, "logs", "weaviate", "-n", "5")
        assert logs.returncode == 0 and logs.stdout.strip()
    finally:
        down = _cli(env, "down")
    assert down.returncode == 0
    for pid in _pids(home).values() if (home / "stack.json").exists() else []:
        pytest.fail(f"pid {pid} still recorded after down")
    for pid in new.values():
        assert not _alive(pid), f"process {pid} survived `stack down`"
    rc, _ = _status(env)
    assert rc != 0
