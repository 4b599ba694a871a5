"""The local stack's own secrets: generated on first `stack up`, kept in its state directory (mode 0600).

Nothing here ships a value. `localize(settings)` fills the secrets a local process needs (JWT signing key,
Weaviate API key) and the local content root from the stack's state directory, and only when the operator
configured none (`stack.local_mode` is on by default; compose and the Helm chart turn it off).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from application.stack.home import stack_home
from application.stack.tls import broker_tls_paths
from ragstream.settings import KafkaSettings, Settings

SECRETS_FILE = "secrets.json"
CONTENT_DIR = "content"
# The SCRAM user of the broker's opt-in SASL_SSL listener (`stack.kafka_sasl_ssl_port`): its own file, so
# stacks that never enable the listener keep their secrets file as it is.
KAFKA_SASL_FILE = "kafka-sasl.json"
KAFKA_SASL_USER = "ragstream"
KAFKA_SASL_MECHANISM = "SCRAM-SHA-512"
CONNECTION_FIELDS = frozenset(
    {"security_protocol", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password"}
    | {"sasl_mechanism", "sasl_username", "sasl_password"}
)


def _generate() -> dict[str, str]:
    return {"jwt_secret": secrets.token_urlsafe(48), "weaviate_api_key": secrets.token_urlsafe(32)}


def ensure_local_secrets(home: Path) -> dict[str, str]:
    """The stack's secrets, created once (atomically, owner-only) when missing."""
    path = home / SECRETS_FILE
    found = read_local_secrets(home)
    if found is not None:
        return found
    (home / CONTENT_DIR).mkdir(parents=True, exist_ok=True)
    values = _generate()
    _write_private(path, values)
    return values


def _write_private(path: Path, values: dict[str, str]) -> None:
    """Atomically, owner-only from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    os.replace(tmp, path)


def ensure_kafka_sasl_secret(home: Path) -> dict[str, str]:
    """The SCRAM user (username, password) of the stack's SASL_SSL listener, created once when missing."""
    found = read_kafka_sasl_secret(home)
    if found is not None:
        return found
    values = {"username": KAFKA_SASL_USER, "password": secrets.token_urlsafe(32)}
    _write_private(home / KAFKA_SASL_FILE, values)
    return values


def read_kafka_sasl_secret(home: Path) -> dict[str, str] | None:
    path = home / KAFKA_SASL_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("username", "password")):
        raise ValueError(f"{path} is not a ragstream Kafka credentials file; remove it to regenerate")
    return {"username": data["username"], "password": data["password"]}


def sasl_ssl_kafka(settings: Settings) -> KafkaSettings:
    """`settings.kafka` pointed at the local broker's SASL_SSL listener, with the stack's CA and SCRAM user
    (what a local process would put in `RAGSTREAM_KAFKA__*` to connect the secured way)."""
    port = settings.stack.kafka_sasl_ssl_port
    home = stack_home(settings)
    found = read_kafka_sasl_secret(home)
    if not port or found is None:
        raise ValueError("the stack has no SASL_SSL listener; set stack.kafka_sasl_ssl_port and run stack up")
    kept = settings.kafka.model_dump(exclude={"bootstrap_servers", *CONNECTION_FIELDS})
    return KafkaSettings(
        **kept,
        bootstrap_servers=f"127.0.0.1:{port}",
        security_protocol="SASL_SSL",
        ssl_cafile=broker_tls_paths(home).ca,
        sasl_mechanism=KAFKA_SASL_MECHANISM,
        sasl_username=found["username"],
        sasl_password=SecretStr(found["password"]),
    )


def read_local_secrets(home: Path) -> dict[str, str] | None:
    path = home / SECRETS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in _generate()):
        raise ValueError(f"{path} is not a ragstream stack secrets file; remove it to regenerate")
    return {k: data[k] for k in _generate()}


def localize(settings: Settings, create: bool = False) -> Settings:
    """`settings` with unset secrets and content roots taken from the local stack (when in local mode).

    `create`: generate the secrets if the stack has none yet (only `stack up` does this)."""
    if not settings.stack.local_mode:
        return settings
    home = stack_home(settings)
    found = ensure_local_secrets(home) if create else read_local_secrets(home)
    if found is None:
        return settings
    update: dict[str, object] = {}
    if settings.auth.jwt_secret is None:
        update["auth"] = settings.auth.model_copy(update={"jwt_secret": SecretStr(found["jwt_secret"])})
    if not settings.weaviate.api_key.get_secret_value():
        update["weaviate"] = settings.weaviate.model_copy(
            update={"api_key": SecretStr(found["weaviate_api_key"])}
        )
    if not settings.ingest.content_roots:
        update["ingest"] = settings.ingest.model_copy(update={"content_roots": (home / CONTENT_DIR,)})
    return settings.model_copy(update=update) if update else settings


def load_settings(**overrides: object) -> Settings:
    """The start-up settings of a local process: `Settings()` from the environment, then `localize`."""
    return localize(Settings(**overrides))  # type: ignore[arg-type]
