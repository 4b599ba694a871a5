"""Test fixtures: where the real Kafka and Weaviate come from, and per-test unique names.

Resolution order: `KAFKA_BOOTSTRAP_SERVERS` / `WEAVIATE_URL` (+ `WEAVIATE_GRPC_PORT`, `WEAVIATE_API_KEY`)
when set; else testcontainers when a Docker engine answers; else the local stack (`ragstream stack up`,
idempotent). A missing service fails the run: integration tests never skip silently.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ragstream.settings import KafkaSettings, Settings, WeaviateSettings


@dataclass(frozen=True)
class Services:
    kafka: KafkaSettings
    weaviate: WeaviateSettings
    source: str


def _docker_answers() -> bool:
    try:
        import docker  # testcontainers depends on it

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _from_env() -> Services | None:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    wv = os.environ.get("WEAVIATE_URL")
    if not (kafka and wv):
        return None
    return Services(
        KafkaSettings(bootstrap_servers=kafka),
        WeaviateSettings(
            url=wv,
            grpc_port=int(os.environ.get("WEAVIATE_GRPC_PORT", "50051")),
            api_key=os.environ.get("WEAVIATE_API_KEY", ""),
        ),
        "env",
    )


def _from_testcontainers(stack: list[Any]) -> Services:  # pragma: no cover - needs a Docker engine
    from testcontainers.kafka import KafkaContainer
    from testcontainers.weaviate import WeaviateContainer

    kafka = KafkaContainer("apache/kafka:4.1.1").with_kraft()
    kafka.start()
    stack.append(kafka)
    wv = WeaviateContainer(
        "cr.weaviate.io/semitechnologies/weaviate:1.39.0",
        env_vars={"ENABLE_MODULES": "backup-filesystem", "BACKUP_FILESYSTEM_PATH": "/tmp/backups"},
    )
    wv.start()
    stack.append(wv)
    host = wv.get_container_host_ip()
    return Services(
        KafkaSettings(bootstrap_servers=kafka.get_bootstrap_server()),
        WeaviateSettings(
            url=f"http://{host}:{wv.get_exposed_port(8080)}",
            grpc_port=int(wv.get_exposed_port(50051)),
            api_key="",
        ),
        "testcontainers",
    )


def _from_local_stack() -> Services:
    from application.stack.manager import Stack
    from application.stack.secrets import localize

    s = localize(Settings(), create=True)  # the stack's own secrets, as `ragstream stack up` makes them
    Stack(s).up(lambda _svc, _line: None)
    return Services(s.kafka, s.weaviate, "local-stack")


def _drop_test_topics(kafka: KafkaSettings) -> None:
    """Every topic namespace this session's tests made (tests.support.kafka.isolated): a shared broker
    would otherwise collect thousands of test topics over many runs, and slow down."""
    import asyncio

    from ragstream.runtime.kafka_admin import drop_topics
    from tests.support.kafka import ISSUED_PREFIXES

    if ISSUED_PREFIXES:
        asyncio.run(drop_topics(kafka, ISSUED_PREFIXES))


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    containers: list[Any] = []
    found = _from_env()
    if found is None:
        found = _from_testcontainers(containers) if _docker_answers() else _from_local_stack()
    yield found
    _drop_test_topics(found.kafka)
    for c in reversed(containers):
        c.stop()


@pytest.fixture(scope="session")
def settings(services: Services) -> Settings:
    from pydantic import SecretStr

    from application.stack.secrets import localize

    s = Settings(kafka=services.kafka, weaviate=services.weaviate)
    if services.source == "local-stack":
        # What every local process sees: the stack's generated signing key and content root.
        s = localize(s)
    if s.auth.jwt_secret is None:  # no shipped default: this session's own signing key
        s = s.model_copy(
            update={"auth": s.auth.model_copy(update={"jwt_secret": SecretStr(secrets.token_urlsafe(48))})}
        )
    return s


@pytest.fixture
def unique() -> str:
    """A short unique token for topic, collection and tenant names of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def embedder():
    from ragstream.adapters.embedder import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(Settings().embedding)


@pytest.fixture
def isolated(settings: Settings, unique: str) -> Iterator[Settings]:
    """Settings with their own topics and index generation; the generation's collections are dropped after."""
    from tests.support.pipeline import drop_index, isolated_pipeline_settings

    s = isolated_pipeline_settings(settings, unique)
    yield s
    drop_index(s)
