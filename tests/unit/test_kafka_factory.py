"""The one Kafka client factory: connection settings checked at load, applied to every client, not echoed."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr, ValidationError

from application.stack.secrets import KAFKA_SASL_FILE, ensure_kafka_sasl_secret, sasl_ssl_kafka
from application.stack.services import KafkaService
from application.stack.tls import ensure_broker_tls
from ragstream.runtime import kafka
from ragstream.runtime.offsets import GroupOffsets, read_to_end
from ragstream.settings import KafkaSettings, Settings, StackSettings

pytestmark = pytest.mark.unit
PASSWORD = "pw-that-must-never-be-printed"


def _scram(**over: object) -> KafkaSettings:
    fields: dict[str, object] = {
        "bootstrap_servers": "broker:9094",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "ragstream-worker",
        "sasl_password": PASSWORD,
    }
    return KafkaSettings(**{**fields, **over})  # type: ignore[arg-type]


def test_plaintext_connection_is_bootstrap_and_client_id_only() -> None:
    k = KafkaSettings(bootstrap_servers="a:9092,b:9092", client_id="rs")
    assert kafka.connection(k) == {
        "bootstrap_servers": "a:9092,b:9092",
        "client_id": "rs",
        "security_protocol": "PLAINTEXT",
    }
    assert kafka.connection(k, "rs-admin")["client_id"] == "rs-admin"


def test_sasl_ssl_scram_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = ensure_broker_tls(tmp_path).ca
    env = {
        "SECURITY_PROTOCOL": "sasl_ssl",  # case-insensitive, as Quix Streams' ConnectionConfig
        "SASL_MECHANISM": "scram-sha-512",
        "SASL_USERNAME": "ragstream-worker",
        "SASL_PASSWORD": PASSWORD,
        "SSL_CAFILE": str(ca),
    }
    for key, value in env.items():
        monkeypatch.setenv(f"RAGSTREAM_KAFKA__{key}", value)
    k = Settings().kafka
    assert PASSWORD not in repr(k) and PASSWORD not in str(Settings())
    conn = kafka.connection(k)
    assert conn["security_protocol"] == "SASL_SSL" and conn["sasl_mechanism"] == "SCRAM-SHA-512"
    assert conn["sasl_plain_username"] == "ragstream-worker" and conn["sasl_plain_password"] == PASSWORD
    ctx = conn["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_mutual_tls_loads_the_client_certificate(tmp_path: Path) -> None:
    tls = ensure_broker_tls(tmp_path)  # a PEM with key and certificate: what load_cert_chain takes
    k = KafkaSettings(security_protocol="SSL", ssl_cafile=tls.ca, ssl_certfile=tls.keystore)
    conn = kafka.connection(k)
    assert "sasl_mechanism" not in conn and isinstance(conn["ssl_context"], ssl.SSLContext)
    with pytest.raises(ssl.SSLError):  # a certificate file without its key does not load
        kafka.ssl_context(k.model_copy(update={"ssl_certfile": tls.ca}))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sasl_username": None}, "needs kafka.sasl_username"),
        ({"sasl_mechanism": None, "sasl_password": None}, "needs kafka.sasl_mechanism, kafka.sasl_password"),
        ({"sasl_password": ""}, "needs kafka.sasl_password"),
        ({"sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
        ({"security_protocol": "PLAINTEXT"}, "kafka.sasl_* is set but kafka.security_protocol is PLAINTEXT"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"ssl_cafile": "/nonexistent/ca.pem"}, "kafka.ssl_cafile: no such file /nonexistent/ca.pem"),
        ({"ssl_keyfile": __file__}, "kafka.ssl_keyfile and kafka.ssl_key_password need kafka.ssl_certfile"),
    ],
)
def test_incomplete_security_settings_refused_at_load_without_echoing_the_password(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _scram(**fields)
    assert message in str(caught.value)
    assert PASSWORD not in str(caught.value) and PASSWORD not in repr(caught.value)


def test_tls_files_without_tls_refused(tmp_path: Path) -> None:
    ca = ensure_broker_tls(tmp_path).ca
    with pytest.raises(ValidationError) as caught:
        KafkaSettings(ssl_cafile=ca)
    assert "kafka.ssl_* is set but kafka.security_protocol is PLAINTEXT" in str(caught.value)


def test_settings_errors_do_not_echo_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGSTREAM_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RAGSTREAM_KAFKA__SASL_PASSWORD", PASSWORD)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "needs kafka.sasl_mechanism, kafka.sasl_username" in str(caught.value)
    assert PASSWORD not in str(caught.value)


async def test_every_client_gets_the_connection_and_no_caller_can_override_it(tmp_path: Path) -> None:
    k = _scram(ssl_cafile=ensure_broker_tls(tmp_path).ca)
    clients = [
        kafka.producer(k, acks="all"),
        kafka.consumer(k, "t", group_id="g", enable_auto_commit=False),
        kafka.admin(k, client_id="rs-admin"),
    ]
    assert isinstance(clients[0], AIOKafkaProducer) and isinstance(clients[1], AIOKafkaConsumer)
    assert isinstance(clients[2], AIOKafkaAdminClient)
    for client in clients:
        inner = getattr(client, "client", None) or client._client
        assert inner._security_protocol == "SASL_SSL" and inner._sasl_mechanism == "SCRAM-SHA-512"
        assert inner._sasl_plain_username == "ragstream-worker" and inner._ssl_context is not None
    assert clients[2]._client._client_id == "rs-admin"
    with pytest.raises(TypeError, match="bootstrap_servers: set in KafkaSettings"):
        kafka.producer(k, bootstrap_servers="elsewhere:9092")
    with pytest.raises(TypeError, match="security_protocol"):
        kafka.consumer(k, security_protocol="PLAINTEXT")


def test_group_lag_counts_uncommitted_partitions_from_zero_or_the_log_start() -> None:
    found = GroupOffsets(ends={0: 10, 1: 7, 2: 5}, committed={0: 4, 2: 9}, starts={0: 0, 1: 3, 2: 0})
    assert found.lag() == 6 + 7 + 0  # KEDA's view: partition 1 never committed counts its whole end
    assert found.lag("log_start") == 6 + 4 + 0  # what that group would really read
    assert GroupOffsets({}, {}, {}).lag() == 0


def test_stack_tls_files_and_scram_secret_are_private(tmp_path: Path) -> None:
    tls = ensure_broker_tls(tmp_path)
    assert stat.S_IMODE(tls.keystore.stat().st_mode) == 0o600
    assert stat.S_IMODE(tls.keystore.parent.stat().st_mode) == 0o700
    assert ensure_broker_tls(tmp_path) == tls and tls.keystore.read_bytes().startswith(b"-----BEGIN PRIVATE")
    first = ensure_kafka_sasl_secret(tmp_path)
    assert stat.S_IMODE((tmp_path / KAFKA_SASL_FILE).stat().st_mode) == 0o600
    assert ensure_kafka_sasl_secret(tmp_path) == first and len(first["password"]) >= 32


def test_sasl_ssl_listener_is_opt_in(tmp_path: Path) -> None:
    plain = KafkaService(Settings(stack=StackSettings(home=tmp_path)), tmp_path)._properties(tmp_path)
    assert "SASL" not in plain and "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://" in plain
    secured = Settings(stack=StackSettings(home=tmp_path, kafka_sasl_ssl_port=29094))
    props = KafkaService(secured, tmp_path)._properties(tmp_path)
    assert "SASL_SSL://127.0.0.1:29094" in props and "sasl.enabled.mechanisms=SCRAM-SHA-512" in props
    assert "listener.name.sasl_ssl.ssl.keystore.type=PEM" in props
    password = ensure_kafka_sasl_secret(tmp_path)["password"]
    assert password not in props
    k = sasl_ssl_kafka(secured)
    assert k.bootstrap_servers == "127.0.0.1:29094" and k.ssl_cafile == tmp_path / "kafka" / "tls" / "ca.pem"
    assert k.sasl_password == SecretStr(password) and k.sasl_username == "ragstream"


class _Log:
    """Just enough of AIOKafkaConsumer for read_to_end: partitions with offsets, one getmany at a time."""

    def __init__(self, sizes: dict[int, int]) -> None:
        self.logs = {TopicPartition("t", p): list(range(n)) for p, n in sizes.items()}
        self.pos: dict[TopicPartition, int] = {}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp]) for tp in tps}

    def assign(self, tps: list[TopicPartition]) -> None:
        self.pos = dict.fromkeys(tps, 0)

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.pos.update(dict.fromkeys(tps, 0))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.pos[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        return self.pos[tp]

    async def getmany(self, *tps: TopicPartition, timeout_ms: int, max_records: int | None) -> dict:
        out = {}
        for tp in tps:
            take = self.logs[tp][self.pos[tp] : self.pos[tp] + (max_records or 10**9)]
            if take:
                out[tp] = [SimpleNamespace(offset=o) for o in take]
                self.pos[tp] += len(take)
            self.logs[tp].append(len(self.logs[tp]))  # published meanwhile: past the end, not read
        return out


async def test_read_to_end_stops_at_the_end_offsets_it_started_with() -> None:
    log = _Log({0: 5, 1: 0, 2: 3})
    tps = list(log.logs)
    got = [r.offset async for r in read_to_end(log, tps, max_records=2)]  # type: ignore[arg-type]
    assert sorted(got) == [0, 0, 1, 1, 2, 2, 3, 4]
    log = _Log({0: 5, 1: 4})
    start = {TopicPartition("t", 0): 3}
    assert [r.offset async for r in read_to_end(log, list(start), start)] == [3, 4]  # type: ignore[arg-type]
    assert [r async for r in read_to_end(log, [])] == []  # type: ignore[arg-type]
