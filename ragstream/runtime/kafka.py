"""Every Kafka client ragstream opens, built from `KafkaSettings` (after Quix Streams' ConnectionConfig).

`connection(kafka)` is the part of a client's configuration that says how to reach the cluster: bootstrap
servers, client id, security protocol, the TLS context (cluster CA, client certificate for mutual TLS) and
the SASL credentials (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512). `producer`, `consumer` and `admin` apply it and
take everything else (acks, groups, fetch sizes) as keyword options, so no caller can forget the security
settings, and none can override them by accident.

aiokafka reports any failed bootstrap as "Unable to bootstrap" and only logs why. A client built here that
fails to start looks once more at the first reachable server and raises what it found instead:
`KafkaAuthenticationError` (wrong credentials, mechanism not enabled) or `KafkaTlsError` (certificate not
trusted, or not a TLS listener); neither message carries a secret.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from ragstream.settings import KafkaSettings

__all__ = [
    "KafkaAuthenticationError",
    "KafkaTlsError",
    "admin",
    "connection",
    "consumer",
    "diagnose",
    "producer",
    "ssl_context",
]
DIAGNOSE_TIMEOUT_S = 10.0


class KafkaAuthenticationError(ConnectionError):
    """The broker refused this client's SASL credentials or mechanism."""


class KafkaTlsError(ConnectionError):
    """The TLS handshake with the broker failed (untrusted certificate, wrong host name, not TLS)."""


# Options a caller may not pass: they are the connection, and come only from the settings.
_CONNECTION_KEYS = frozenset(
    {
        "bootstrap_servers",
        "security_protocol",
        "ssl_context",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
    }
)


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """Server verification against `ssl_cafile` (else the system trust store), hostname checked; the
    client certificate and key when mutual TLS is configured."""
    password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None
    return create_ssl_context(
        cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
        certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
        keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
        password=password,
    )


def connection(kafka: KafkaSettings, client_id: str | None = None) -> dict[str, Any]:
    """The aiokafka keyword arguments that reach and authenticate to the cluster."""
    out: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": client_id or kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        out["ssl_context"] = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL_"):
        # Validated at load (KafkaSettings): a SASL protocol always has a mechanism and credentials.
        assert kafka.sasl_mechanism and kafka.sasl_username and kafka.sasl_password
        out["sasl_mechanism"] = kafka.sasl_mechanism
        out["sasl_plain_username"] = kafka.sasl_username
        out["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return out


async def diagnose(kafka: KafkaSettings) -> ConnectionError | None:
    """Why a client could not bootstrap, when the first server that answers says so: one connection
    (handshake and SASL exchange), then closed. None when it connects, or no server answers at all."""
    for server in kafka.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host.strip("[]"), int(port), **_conn_options(kafka)), DIAGNOSE_TIMEOUT_S
            )
        except (SaslAuthenticationFailed, UnsupportedSaslMechanismError, IllegalSaslStateError) as exc:
            return KafkaAuthenticationError(
                f"kafka: {server} refused SASL {kafka.sasl_mechanism} authentication as user "
                f"{kafka.sasl_username!r} ({type(exc).__name__}); check kafka.sasl_username, "
                "kafka.sasl_password and kafka.sasl_mechanism"
            )
        except ssl.SSLError as exc:
            return KafkaTlsError(
                f"kafka: TLS handshake with {server} failed ({exc.reason or exc}); check kafka.ssl_cafile "
                "and that the address is the TLS listener of kafka.security_protocol"
            )
        except (TimeoutError, OSError, KafkaConnectionError):
            continue  # not reachable: try the next server
        conn.close()
        return None
    return None


def _conn_options(kafka: KafkaSettings) -> dict[str, Any]:
    found = connection(kafka)
    del found["bootstrap_servers"]
    return found


class _ExplainsStartFailure:
    """`start()` raises what `diagnose` finds instead of aiokafka's bare "Unable to bootstrap"."""

    _kafka_settings: KafkaSettings

    async def start(self) -> None:
        try:
            await super().start()  # type: ignore[misc]
        except KafkaConnectionError as exc:
            cause = await diagnose(self._kafka_settings)
            if cause is None:
                raise
            raise cause from exc


class _Producer(_ExplainsStartFailure, AIOKafkaProducer):
    pass


class _Consumer(_ExplainsStartFailure, AIOKafkaConsumer):
    pass


class _Admin(_ExplainsStartFailure, AIOKafkaAdminClient):
    pass


def _options(kafka: KafkaSettings, client_id: str | None, options: dict[str, Any]) -> dict[str, Any]:
    fixed = _CONNECTION_KEYS & options.keys()
    if fixed:
        raise TypeError(f"{', '.join(sorted(fixed))}: set in KafkaSettings, not per client")
    return {**connection(kafka, client_id), **options}


def _built(client: _ExplainsStartFailure, kafka: KafkaSettings) -> None:
    client._kafka_settings = kafka


def producer(kafka: KafkaSettings, *, client_id: str | None = None, **options: Any) -> AIOKafkaProducer:
    client = _Producer(**_options(kafka, client_id, options))
    _built(client, kafka)
    return client


def consumer(
    kafka: KafkaSettings,
    *topics: str,
    group_id: str | None = None,
    client_id: str | None = None,
    **options: Any,
) -> AIOKafkaConsumer:
    """Subscribed to `topics` (full names) when given; `group_id=None` for manual assignment."""
    client = _Consumer(*topics, group_id=group_id, **_options(kafka, client_id, options))
    _built(client, kafka)
    return client


def admin(kafka: KafkaSettings, *, client_id: str | None = None, **options: Any) -> AIOKafkaAdminClient:
    client = _Admin(**_options(kafka, client_id, options))
    _built(client, kafka)
    return client
