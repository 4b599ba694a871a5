"""`ragstream up`: the whole local platform, as it is deployed, on loopback.

The infrastructure (Kafka, Weaviate, the model server) comes from the local stack (`application.stack`);
on top of it a small supervisor process runs every consumer of the registry as its own process
(`ragstream worker NAME`, each with /metrics, /livez and /readyz on its own port, as its Deployment runs)
and the gateway (`ragstream gateway serve`). The supervisor restarts a process that exits, with backoff,
and records pid, restarts and last exit in `<stack home>/platform/platform.json`; `down` stops the
supervisor (which stops its children) and then the stack, and only what they started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from application.stack.manager import stack_home
from application.stack.process import ProcessRecord, is_alive, port_open, spawn, stop, tail
from ragstream.settings import Settings
from schemas.topics import CONSUMERS

BACKOFF_MAX_S = 60.0
STABLE_S = 60.0  # a child that ran this long is healthy again: its backoff starts over
# The online verifier shares the one local CPU model server with generation (one request at a time, ~20 s
# per verified answer): locally it samples 2 % of answers unless RAGSTREAM_VERIFIER__SAMPLE_RATE says
# otherwise (production default 10 %, ragstream.settings.VerifierSettings).
LOCAL_VERIFIER_SAMPLE_RATE = "0.02"


@dataclass(frozen=True)
class ChildSpec:
    name: str  # "worker:<consumer>" or "gateway"
    argv: tuple[str, ...]
    port: int
    health_path: str
    # Environment for this child only; the supervisor's own environment wins over it.
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class ChildState:
    name: str
    pid: int = 0
    start_ticks: int = -1
    port: int = 0
    log: str = ""
    restarts: int = 0
    last_exit: str = ""
    started_at: float = 0.0
    next_start_at: float = 0.0

    def record(self) -> ProcessRecord:
        return ProcessRecord(self.name, self.pid, self.start_ticks, self.port, self.log, "")


@dataclass
class PlatformState:
    supervisor_pid: int = 0
    supervisor_ticks: int = -1
    children: dict[str, ChildState] = field(default_factory=dict)
    # Infrastructure processes (kafka, weaviate, model-server) found crashed and started again.
    infra_restarts: dict[str, int] = field(default_factory=dict)
    infra_last_exit: dict[str, str] = field(default_factory=dict)


def children(settings: Settings) -> list[ChildSpec]:
    """Every consumer of the registry as its own process, then the gateway."""
    cli = (sys.executable, "-m", "application.cli.main")
    base, gateway_port = settings.stack.worker_metrics_port, settings.stack.gateway_port
    out = [
        ChildSpec(
            f"worker:{name}",
            (
                *cli,
                "worker",
                name,
                "--metrics-port",
                str(base + i),
                "--metrics-host",
                "127.0.0.1",
            ),
            base + i,
            "/readyz",
            (("RAGSTREAM_VERIFIER__SAMPLE_RATE", LOCAL_VERIFIER_SAMPLE_RATE),) if name == "verifier" else (),
        )
        for i, name in enumerate(CONSUMERS)
    ]
    out.append(
        ChildSpec("gateway", (*cli, "gateway", "serve", "--port", str(gateway_port)), gateway_port, "/readyz")
    )
    return out


def platform_home(settings: Settings) -> Path:
    return stack_home(settings) / "platform"


class StateStore:
    def __init__(self, home: Path) -> None:
        self.path = home / "platform.json"

    def load(self) -> PlatformState:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return PlatformState()
        kids = {k: ChildState(**v) for k, v in raw.get("children", {}).items()}
        return PlatformState(
            raw.get("supervisor_pid", 0),
            raw.get("supervisor_ticks", -1),
            kids,
            raw.get("infra_restarts", {}),
            raw.get("infra_last_exit", {}),
        )

    def save(self, state: PlatformState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.path)


def supervisor_alive(state: PlatformState) -> bool:
    return state.supervisor_pid > 0 and is_alive(
        ProcessRecord("supervisor", state.supervisor_pid, state.supervisor_ticks, 0, "", "")
    )


def healthy(spec_port: int, path: str, timeout: float = 1.0) -> bool:
    if not port_open(spec_port):
        return False
    try:
        return httpx.get(f"http://127.0.0.1:{spec_port}{path}", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


# --- the supervisor process ------------------------------------------------------------------------------


class Supervisor:
    """Keeps every child running: starts them, restarts one that exits (backoff 1, 2, 4 ... 60 s), stops
    them all on SIGTERM. Its state file is what `ragstream status` reads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = platform_home(settings)
        self.store = StateStore(self.home)
        self.specs = {c.name: c for c in children(settings)}
        self.state = PlatformState()
        self._stop = False

    def start_child(self, spec: ChildSpec, st: ChildState) -> None:
        log = self.home / "logs" / f"{spec.name.replace(':', '-')}.log"
        rec = spawn(
            spec.name,
            spec.argv,
            env={**dict(spec.env), **os.environ},
            cwd=Path.cwd(),
            log=log,
            port=spec.port,
            version="",
        )
        st.pid, st.start_ticks, st.port, st.log, st.started_at = (
            rec.pid,
            rec.start_ticks,
            spec.port,
            str(log),
            time.time(),
        )

    def tick(self, now: float) -> None:
        for name, spec in self.specs.items():
            st = self.state.children.setdefault(name, ChildState(name))
            if st.pid and is_alive(st.record()):
                continue
            if st.pid:  # it was running and is gone: record why, schedule a restart with backoff
                st.last_exit = f"exited at {time.strftime('%H:%M:%S')}: " + " | ".join(tail(st.log, 2))[-300:]
                ran = now - st.started_at
                st.restarts += 1
                delay = 1.0 if ran > STABLE_S else min(BACKOFF_MAX_S, 2.0 ** min(st.restarts, 6))
                st.next_start_at = now + delay
                st.pid = 0
            if now >= st.next_start_at:
                self.start_child(spec, st)

    def check_infrastructure(self) -> None:
        """A crashed Kafka, Weaviate or model server is started again (the stack's own `up`, which starts
        only what is not running) and the restart is recorded with the log's last lines."""
        from application.stack.extra import extra_services
        from application.stack.manager import Stack

        stack = Stack(self.settings, extra_services(self.settings))
        crashed = [s for s in stack.status() if s.state == "crashed"]
        if not crashed:
            return
        for s in crashed:
            self.state.infra_restarts[s.service] = self.state.infra_restarts.get(s.service, 0) + 1
            self.state.infra_last_exit[s.service] = " | ".join(s.last_log_lines[-2:])[-300:]
        self.store.save(self.state)
        with contextlib.suppress(Exception):  # reported by `status`; the next check tries again
            stack.up(lambda _n, _line: None)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        self.state = self.store.load()
        self.state.supervisor_pid = os.getpid()
        self.state.supervisor_ticks = _own_ticks()
        ticks = 0
        while not self._stop:
            self.tick(time.time())
            if ticks % 10 == 0:
                self.check_infrastructure()
            ticks += 1
            self.store.save(self.state)
            time.sleep(1.0)
        for st in self.state.children.values():
            if st.pid:
                stop(st.record(), timeout_s=self.settings.worker.shutdown_timeout_s + 5)
                st.pid = 0
        self.state.supervisor_pid = 0
        self.store.save(self.state)

    def _on_term(self, *_: object) -> None:
        self._stop = True


def _own_ticks() -> int:
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


# --- what the CLI calls ----------------------------------------------------------------------------------


Progress = Callable[[str, str], None]


def up(settings: Settings, progress: Progress, timeout_s: float = 600.0) -> dict[str, Any]:
    """Infrastructure (idempotent), then the supervisor (unless one runs), then wait until every child
    answers its health check."""
    from application.stack.extra import extra_services
    from application.stack.manager import Stack

    Stack(settings, extra_services(settings)).up(progress)
    progress("platform", f"live generation {register_first_generation(settings)}")
    home = platform_home(settings)
    store = StateStore(home)
    if not supervisor_alive(store.load()):
        rec = spawn(
            "supervisor",
            (sys.executable, "-m", "application.platform"),
            env=dict(os.environ),
            cwd=Path.cwd(),
            log=home / "logs" / "supervisor.log",
            port=0,
            version="",
        )
        progress("platform", f"supervisor started (pid {rec.pid})")
    else:
        progress("platform", "supervisor already running")
    deadline = time.monotonic() + timeout_s
    pending = {c.name: c for c in children(settings)}
    while pending:
        for name, c in list(pending.items()):
            if healthy(c.port, c.health_path):
                progress(name, "ready")
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise TimeoutError(
                f"not ready after {timeout_s:.0f}s: {', '.join(pending)} (see `ragstream logs NAME`)"
            )
        if pending:
            time.sleep(0.5)
    return status(settings)


@dataclass(frozen=True)
class EmbeddingIdentity:
    """What a generation record says about its embedding model, without loading the model."""

    model_id: str
    revision: str
    dimensions: int


def embedding_identity(settings: Settings) -> EmbeddingIdentity:
    from ragstream.adapters.embedder import packaged_model_path
    from ragstream.adapters.embedding.backends import INCOMPATIBLE_SUFFIX

    cfg = settings.embedding
    root = Path(cfg.local_path) if cfg.local_path else packaged_model_path()
    try:
        dims = int(json.loads((root / "1_Pooling" / "config.json").read_text())["word_embedding_dimension"])
    except (OSError, ValueError, KeyError):
        dims = 0
    return EmbeddingIdentity(cfg.model_id, cfg.revision + INCOMPATIBLE_SUFFIX.get(cfg.backend, ""), dims)


def register_first_generation(settings: Settings) -> str:
    """On the first start, record the index the live pipeline fills as the live generation (normalizer,
    chunking policy, embedding model, collections), so `generation list`, evaluate, backup and rollback
    work from day one and later builds roll back to it. Idempotent."""
    from ragstream.adapters.weaviate_client import connect
    from ragstream.generations.build import adopt_live
    from ragstream.generations.registry import Registry

    client = connect(settings.weaviate)
    try:
        registry = Registry(client, settings)
        registry.ensure()
        return adopt_live(registry, settings, embedding_identity(settings))  # type: ignore[arg-type]
    finally:
        client.close()


def down(settings: Settings) -> list[str]:
    """Stop the supervisor (it stops its children), then the stack: only what they started."""
    from application.stack.extra import extra_services
    from application.stack.manager import Stack

    store = StateStore(platform_home(settings))
    state = store.load()
    stopped: list[str] = []
    if supervisor_alive(state):
        rec = ProcessRecord("supervisor", state.supervisor_pid, state.supervisor_ticks, 0, "", "")
        stop(rec, timeout_s=settings.worker.shutdown_timeout_s + 20)
        stopped.append("supervisor")
    for st in store.load().children.values():  # anything the supervisor could not stop
        if st.pid and stop(st.record()):
            stopped.append(st.name)
    stopped += Stack(settings, extra_services(settings)).down()
    return stopped


def status(settings: Settings, with_lag: bool = True) -> dict[str, Any]:
    from application.stack.extra import extra_services
    from application.stack.manager import Stack

    infra = [asdict(s) for s in Stack(settings, extra_services(settings)).status()]
    state = StateStore(platform_home(settings)).load()
    lags = _lags(settings) if with_lag and any(s["healthy"] for s in infra if s["service"] == "kafka") else {}
    procs = []
    supervised = supervisor_alive(state)
    for c in children(settings):
        st = state.children.get(c.name, ChildState(c.name))
        alive = bool(st.pid) and is_alive(st.record())
        entry: dict[str, Any] = {
            "name": c.name,
            "pid": st.pid if alive else None,
            "port": c.port,
            "state": "running" if alive else ("restarting" if supervised else "stopped"),
            "healthy": alive and healthy(c.port, c.health_path),
            "restarts": st.restarts,
            "last_exit": st.last_exit,
            "log": st.log,
        }
        if c.name.startswith("worker:"):
            entry["lag"] = lags.get(c.name.split(":", 1)[1])
        procs.append(entry)
    for s in infra:
        s["restarts"] = state.infra_restarts.get(s["service"], 0)
        s["last_exit"] = state.infra_last_exit.get(s["service"], "")
    return {
        "supervisor": {"pid": state.supervisor_pid or None, "alive": supervisor_alive(state)},
        "infrastructure": infra,
        "processes": procs,
        "healthy": all(s["healthy"] for s in infra) and all(p["healthy"] for p in procs),
    }


def _lags(settings: Settings) -> dict[str, int | None]:
    import asyncio

    from ragstream.runtime.kafka_admin import group_id
    from ragstream.runtime.offsets import LagReader

    async def read() -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        async with LagReader(settings.kafka) as reader:
            for name, spec in CONSUMERS.items():
                try:
                    out[name] = await asyncio.wait_for(
                        reader.lag(group_id(settings.kafka, name), settings.kafka.topic_prefix + spec.topic),
                        5,
                    )
                except Exception:
                    out[name] = None
        return out

    try:
        return asyncio.run(read())
    except Exception:
        return {}


def log_path(settings: Settings, name: str) -> Path:
    if name in ("kafka", "weaviate", "model-server"):
        return stack_home(settings) / "logs" / f"{name}.log"
    if name == "supervisor":
        return platform_home(settings) / "logs" / "supervisor.log"
    full = name if name == "gateway" or name.startswith("worker:") else f"worker:{name}"
    if full not in {c.name for c in children(settings)}:
        raise KeyError(name)
    return platform_home(settings) / "logs" / f"{full.replace(':', '-')}.log"


def main() -> None:
    from application.cli.common import settings as cli_settings

    with contextlib.suppress(KeyboardInterrupt):
        Supervisor(cli_settings()).run()


if __name__ == "__main__":
    main()
