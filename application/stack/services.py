"""How each local service is obtained, configured and checked.

Kafka: Apache Kafka jars from Maven Central (kafka-pom.xml + `mvn dependency:copy-dependencies`),
KRaft combined mode, one node, listeners on 127.0.0.1. Weaviate: `go install` of the real server through
the Go module proxy, API-key auth, HTTP on loopback. Both are cached under `stack.cache_dir`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from application.stack.process import port_open
from application.stack.secrets import KAFKA_SASL_MECHANISM, ensure_kafka_sasl_secret
from application.stack.tls import ensure_broker_tls
from ragstream.settings import Settings

Progress = Callable[[str], None]
POM = Path(__file__).with_name("kafka-pom.xml")
LOG4J = Path(__file__).with_name("kafka-log4j2.properties")


class StackError(RuntimeError):
    pass


def _run_streaming(argv: list[str], env: dict[str, str], log: Path, progress: Progress) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            progress(line.strip()[:100])
        if proc.wait() != 0:
            raise StackError(f"{argv[0]} failed (exit {proc.returncode}); see {log}")


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int
    version: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path


class KafkaService:
    name = "kafka"

    def __init__(self, settings: Settings, home: Path) -> None:
        self.s = settings.stack
        self.stack_home = home
        self.home = home / "kafka"
        self.libs = self.s.cache_dir / "kafka" / self.s.kafka_version / "libs"
        self.port = self.s.kafka_port
        # Opt-in SASL_SSL listener (0: none); its SCRAM user is recorded here once it exists.
        self.sasl_ssl_port = self.s.kafka_sasl_ssl_port
        self._scram_marker = self.home / "scram-users"

    @property
    def version(self) -> str:
        return self.s.kafka_version

    def installed(self) -> bool:
        return (self.libs / f"kafka_2.13-{self.version}.jar").exists()

    def install(self, progress: Progress) -> None:
        if self.installed():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError("Maven (mvn) is not on PATH; it resolves the Kafka jars from Maven Central")
        tmp = self.libs.with_name("libs.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        argv = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-Dkafka.version={self.version}",
            f"-DoutputDirectory={tmp}",
            f"-Dmaven.repo.local={self.s.cache_dir / 'm2'}",
        ]
        _run_streaming(argv, dict(os.environ), self.s.cache_dir / "logs" / "kafka-jars.log", progress)
        tmp.replace(self.libs)

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise StackError("java (17+) is not on PATH; the Kafka broker needs it")
        return java

    def prepare(self) -> None:
        data = self.home / "data"
        self.home.mkdir(parents=True, exist_ok=True)
        if self.sasl_ssl_port:
            ensure_broker_tls(self.stack_home)
        props = self.home / "server.properties"
        props.write_text(self._properties(data))
        if not (data / "meta.properties").exists():
            self._format(props)

    def _kafka_tool(self, main_class: str, *args: str) -> list[str]:
        return [
            self._java(),
            "-cp",
            f"{self.libs}/*",
            f"-Dlog4j2.configurationFile={LOG4J}",
            main_class,
            *args,
        ]

    def _format(self, props: Path) -> None:
        argv = self._kafka_tool(
            "kafka.tools.StorageTool", "format", "--standalone", "-t", uuid.uuid4().hex[:22], "-c", str(props)
        )
        scram = self._scram_user() if self.sasl_ssl_port else None
        if scram is not None:
            # SCRAM credentials are metadata records: a fresh KRaft log gets them at format time.
            name, password = scram
            argv += ["--add-scram", f"{KAFKA_SASL_MECHANISM}=[name={name},password={password}]"]
        _run_secret_tool(argv, "format the broker's storage", secret=scram[1] if scram else None)
        if scram is not None:
            self._scram_marker.write_text(scram[0] + "\n")

    def _scram_user(self) -> tuple[str, str]:
        found = ensure_kafka_sasl_secret(self.stack_home)
        return found["username"], found["password"]

    def after_healthy(self) -> None:
        """A broker formatted before the SASL_SSL listener was enabled has no SCRAM user yet: create it with
        Kafka's ConfigCommand over the plaintext (loopback) listener."""
        if not self.sasl_ssl_port or self._scram_marker.exists():
            return
        name, password = self._scram_user()
        argv = self._kafka_tool(
            "kafka.admin.ConfigCommand",
            "--bootstrap-server",
            f"127.0.0.1:{self.port}",
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            name,
            "--add-config",
            f"{KAFKA_SASL_MECHANISM}=[password={password}]",
        )
        _run_secret_tool(argv, "create the SCRAM user", secret=password)
        self._scram_marker.write_text(name + "\n")

    def _listeners(self) -> dict[str, int]:
        """Listener name -> port; the SASL_SSL one only when enabled, so the default broker is unchanged."""
        s = self.s
        found = {"PLAINTEXT": s.kafka_port, "CONTROLLER": s.kafka_controller_port}
        if self.sasl_ssl_port:
            found["SASL_SSL"] = self.sasl_ssl_port
        return found

    def _sasl_ssl_properties(self) -> list[str]:
        if not self.sasl_ssl_port:
            return []
        tls = ensure_broker_tls(self.stack_home)
        mech = KAFKA_SASL_MECHANISM.lower()
        return [
            f"sasl.enabled.mechanisms={KAFKA_SASL_MECHANISM}",
            f"listener.name.sasl_ssl.sasl.enabled.mechanisms={KAFKA_SASL_MECHANISM}",
            f"listener.name.sasl_ssl.{mech}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type=PEM",
            f"listener.name.sasl_ssl.ssl.keystore.location={tls.keystore}",
        ]

    def _properties(self, data: Path) -> str:
        s = self.s
        listeners = ",".join(f"{name}://127.0.0.1:{port}" for name, port in self._listeners().items())
        protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT" + (
            ",SASL_SSL:SASL_SSL" if self.sasl_ssl_port else ""
        )
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers=127.0.0.1:{s.kafka_controller_port}",
                f"listeners={listeners}",
                f"advertised.listeners={listeners}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                f"listener.security.protocol.map={protocols}",
                *self._sasl_ssl_properties(),
                f"log.dirs={data}",
                "num.partitions=6",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # Offset commits are on every consumer's poll loop; the 4.x default (5 ms) batches them.
                "group.coordinator.append.linger.ms=0",
                "auto.create.topics.enable=false",
                "message.max.bytes=16000000",
                "log.cleaner.min.compaction.lag.ms=0",
                "",
            ]
        )

    def spec(self) -> ServiceSpec:
        env = dict(os.environ)
        env["KAFKA_HEAP_OPTS"] = self.s.kafka_heap
        argv = [
            self._java(),
            *self.s.kafka_heap.split(),
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J}",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            "-cp",
            f"{self.libs}/*",
            "kafka.Kafka",
            str(self.home / "server.properties"),
        ]
        return ServiceSpec(self.name, self.port, self.version, argv, env, self.home)

    def healthy(self) -> bool:
        return port_open(self.port) and (not self.sasl_ssl_port or port_open(self.sasl_ssl_port))


def _run_secret_tool(argv: list[str], what: str, secret: str | None) -> None:
    """Run a Kafka tool whose arguments may hold a password: a failure reports the tool's output with the
    password masked, never the command line (CalledProcessError's message would print it)."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode == 0:
        return
    out = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
    if secret:
        out = out.replace(secret, "***")
    raise StackError(f"kafka: could not {what} (exit {proc.returncode}):\n{out}")


class WeaviateService:
    name = "weaviate"

    def __init__(self, settings: Settings, home: Path) -> None:
        self.settings = settings
        self.s = settings.stack
        self.home = home / "weaviate"
        self.bin_dir = self.s.cache_dir / "weaviate" / self.s.weaviate_version
        self.binary = self.bin_dir / "weaviate-server"
        self.port = self.s.weaviate_http_port

    @property
    def version(self) -> str:
        return self.s.weaviate_version

    def installed(self) -> bool:
        return self.binary.exists()

    def install(self, progress: Progress) -> None:
        if self.installed():
            return
        go = shutil.which("go")
        if go is None:
            raise StackError("Go is not on PATH; the Weaviate server is built with `go install`")
        env = dict(os.environ)
        env.update(
            CGO_ENABLED="0",
            GOBIN=str(self.bin_dir),
            GOMODCACHE=str(self.s.cache_dir / "go" / "mod"),
            GOCACHE=str(self.s.cache_dir / "go" / "build"),
            GOFLAGS="-mod=mod",
        )
        progress("go install weaviate-server (about 4-8 minutes cold on 2 cores)")
        _run_streaming(
            [go, "install", "-v", f"github.com/weaviate/weaviate/cmd/weaviate-server@v{self.version}"],
            env,
            self.s.cache_dir / "logs" / "weaviate-build.log",
            progress,
        )

    def prepare(self) -> None:
        for sub in ("data", "backups"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)

    def spec(self) -> ServiceSpec:
        s = self.s
        key = self.settings.weaviate.api_key.get_secret_value()
        if not key:  # never an open admin endpoint: `stack up` generates the key (application.stack.secrets)
            raise StackError("weaviate.api_key is empty; start the stack with `ragstream stack up`")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "PERSISTENCE_DATA_PATH": str(self.home / "data"),
            "BACKUP_FILESYSTEM_PATH": str(self.home / "backups"),
            "ENABLE_MODULES": "backup-filesystem",
            "DEFAULT_VECTORIZER_MODULE": "none",
            "CLUSTER_HOSTNAME": "node1",
            "CLUSTER_BIND_ADDR": "127.0.0.1",
            "CLUSTER_ADVERTISE_ADDR": "127.0.0.1",
            "CLUSTER_GOSSIP_BIND_PORT": str(s.weaviate_gossip_port),
            "CLUSTER_DATA_BIND_PORT": str(s.weaviate_data_port),
            "RAFT_PORT": str(s.weaviate_raft_port),
            "RAFT_INTERNAL_RPC_PORT": str(s.weaviate_raft_internal_rpc_port),
            "RAFT_BOOTSTRAP_EXPECT": "1",
            "RAFT_JOIN": f"node1:{s.weaviate_raft_port}",
            "GRPC_PORT": str(s.weaviate_grpc_port),
            "AUTHENTICATION_APIKEY_ENABLED": "true",
            "AUTHENTICATION_APIKEY_ALLOWED_KEYS": key,
            "AUTHENTICATION_APIKEY_USERS": "ragstream-admin",
            "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "false",
            "AUTHORIZATION_ADMINLIST_ENABLED": "true",
            "AUTHORIZATION_ADMINLIST_USERS": "ragstream-admin",
            "AUTOSCHEMA_ENABLED": "false",
            "GO_PROFILING_DISABLE": "true",
            "DISABLE_TELEMETRY": "true",
            "LIMIT_RESOURCES": "true",
            "QUERY_MAXIMUM_RESULTS": "10000",
            "LOG_FORMAT": "text",
        }
        argv = [str(self.binary), "--host", "127.0.0.1", "--port", str(self.port), "--scheme", "http"]
        return ServiceSpec(self.name, self.port, self.version, argv, env, self.home)

    def healthy(self) -> bool:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.port}/v1/.well-known/ready", timeout=1.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200
