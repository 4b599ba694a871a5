"""`ragstream stack up | down | status | logs`: idempotent start, pid-recorded stop, honest status."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from application.stack.home import stack_home
from application.stack.process import ProcessRecord, StateFile, is_alive, spawn, stop, tail
from application.stack.services import KafkaService, Progress, ServiceSpec, StackError, WeaviateService
from ragstream.settings import Settings


class Service(Protocol):
    name: str
    port: int

    @property
    def version(self) -> str: ...
    def installed(self) -> bool: ...
    def install(self, progress: Progress) -> None: ...
    def prepare(self) -> None: ...
    def spec(self) -> ServiceSpec: ...
    def healthy(self) -> bool: ...


@runtime_checkable
class AfterHealthy(Protocol):
    """A service with set-up that needs it running (the broker's SCRAM user on an existing log)."""

    def after_healthy(self) -> None: ...


@dataclass
class ServiceStatus:
    service: str
    state: str  # running | stopped | crashed | unhealthy | starting-failed
    pid: int | None
    port: int
    healthy: bool
    version: str
    log: str = ""
    last_log_lines: list[str] = field(default_factory=list)


class Stack:
    def __init__(self, settings: Settings, extra: list[Service] | None = None) -> None:
        self.settings = settings
        self.home = stack_home(settings)
        self.state = StateFile(self.home / "stack.json")
        self.services: list[Service] = [
            KafkaService(settings, self.home),
            WeaviateService(settings, self.home),
            *(extra or []),
        ]

    def _service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise StackError(f"unknown service {name!r}; known: {', '.join(s.name for s in self.services)}")

    def install(self, progress: Callable[[str, str], None]) -> None:
        for svc in self.services:
            if not svc.installed():
                svc.install(lambda line, n=svc.name: progress(n, line))

    def up(self, progress: Callable[[str, str], None]) -> list[ServiceStatus]:
        self.install(progress)
        records = self.state.load()
        for svc in self.services:
            rec = records.get(svc.name)
            if rec is not None and is_alive(rec):
                progress(svc.name, f"already running (pid {rec.pid})")
                continue
            if svc.healthy():
                raise StackError(
                    f"port {svc.port} answers but ragstream did not start that {svc.name}; "
                    "stop it or point RAGSTREAM_STACK__* ports elsewhere"
                )
            svc.prepare()
            spec = svc.spec()
            log = self.home / "logs" / f"{svc.name}.log"
            records[svc.name] = spawn(
                svc.name, spec.argv, env=spec.env, cwd=spec.cwd, log=log, port=spec.port, version=spec.version
            )
            self.state.save(records)
            progress(svc.name, f"started pid {records[svc.name].pid}, waiting for port {svc.port}")
        self._wait_healthy(records, progress)
        for svc in self.services:
            if isinstance(svc, AfterHealthy):
                svc.after_healthy()
        return self.status()

    def _wait_healthy(self, records: dict[str, ProcessRecord], progress: Callable[[str, str], None]) -> None:
        deadline = time.monotonic() + self.settings.stack.start_timeout_s
        pending = {s.name: s for s in self.services}
        while pending:
            for name, svc in list(pending.items()):
                if svc.healthy():
                    progress(name, "healthy")
                    del pending[name]
                elif not is_alive(records[name]):
                    lines = "\n".join(tail(records[name].log, 25))
                    raise StackError(f"{name} exited during start-up; last log lines:\n{lines}")
            if pending and time.monotonic() > deadline:
                name = next(iter(pending))
                lines = "\n".join(tail(records[name].log, 25))
                limit = self.settings.stack.start_timeout_s
                raise StackError(f"{name} not healthy after {limit:.0f}s; last log lines:\n{lines}")
            if pending:
                time.sleep(0.25)

    def down(self) -> list[str]:
        records = self.state.load()
        stopped = []
        for name in reversed([s.name for s in self.services]):
            rec = records.pop(name, None)
            if rec is not None and stop(rec):
                stopped.append(name)
        self.state.save(records)
        return stopped

    def restart(self, name: str, progress: Callable[[str, str], None]) -> list[ServiceStatus]:
        """Stop one service by its recorded pid (SIGTERM, then SIGKILL after the timeout) and start it
        again with its data kept; the others are left running (`up` skips what is alive)."""
        self._service(name)
        records = self.state.load()
        rec = records.pop(name, None)
        if rec is not None and stop(rec):
            progress(name, f"stopped pid {rec.pid}")
        self.state.save(records)
        return self.up(progress)

    def status(self) -> list[ServiceStatus]:
        records = self.state.load()
        out = []
        for svc in self.services:
            rec = records.get(svc.name)
            alive = rec is not None and is_alive(rec)
            healthy = alive and svc.healthy()
            if rec is None:
                state = "stopped"
            elif not alive:
                state = "crashed"
            else:
                state = "running" if healthy else "unhealthy"
            st = ServiceStatus(
                svc.name,
                state,
                rec.pid if rec else None,
                svc.port,
                healthy,
                svc.version,
                log=rec.log if rec else "",
            )
            if state in ("crashed", "unhealthy") and rec is not None:
                st.last_log_lines = tail(rec.log, 15)
            out.append(st)
        return out

    def log_path(self, name: str) -> Path:
        self._service(name)
        return self.home / "logs" / f"{name}.log"
