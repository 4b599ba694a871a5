"""No secret ships: the settings have none, the local stack generates its own, production never reads them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from application.stack.secrets import SECRETS_FILE, ensure_local_secrets, localize, read_local_secrets
from ragstream.core.secrets import SecretPolicyError, check_secret, is_published
from ragstream.settings import Settings, StackSettings

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]


def _local(tmp: Path, **over: object) -> Settings:
    return Settings(stack=StackSettings(home=tmp, **over))  # type: ignore[arg-type]


def test_settings_carry_no_secret() -> None:
    s = Settings()
    assert s.auth.jwt_secret is None
    assert s.weaviate.api_key.get_secret_value() == ""
    assert s.ingest.content_roots == ()


def test_stack_generates_private_random_secrets_once(tmp_path: Path) -> None:
    first = ensure_local_secrets(tmp_path)
    assert len(first["jwt_secret"]) >= 48 and len(first["weaviate_api_key"]) >= 32
    mode = stat.S_IMODE((tmp_path / SECRETS_FILE).stat().st_mode)
    assert mode == 0o600
    assert ensure_local_secrets(tmp_path) == first == read_local_secrets(tmp_path)
    other = tmp_path / "other"
    assert ensure_local_secrets(other)["jwt_secret"] != first["jwt_secret"]  # random per stack


def test_localize_fills_only_what_is_unset(tmp_path: Path) -> None:
    assert localize(_local(tmp_path)).auth.jwt_secret is None  # nothing generated yet: nothing invented
    s = localize(_local(tmp_path), create=True)
    found = read_local_secrets(tmp_path)
    assert found is not None
    assert s.auth.jwt_secret is not None and s.auth.jwt_secret.get_secret_value() == found["jwt_secret"]
    assert s.weaviate.api_key.get_secret_value() == found["weaviate_api_key"]
    assert s.ingest.content_roots == (tmp_path / "content",)
    own = _local(tmp_path).model_copy(
        update={"auth": Settings().auth.model_copy(update={"jwt_secret": SecretStr("o" * 40)})}
    )
    assert localize(own).auth.jwt_secret.get_secret_value() == "o" * 40  # type: ignore[union-attr]


def test_production_mode_never_reads_the_state_directory(tmp_path: Path) -> None:
    ensure_local_secrets(tmp_path)
    s = localize(_local(tmp_path, local_mode=False))
    assert s.auth.jwt_secret is None and not s.weaviate.api_key.get_secret_value()
    assert s.ingest.content_roots == ()


def test_secret_policy() -> None:
    with pytest.raises(SecretPolicyError, match="32 bytes"):
        check_secret("x", "short")
    old_key = "-".join(["ragstream", "dev", "key"])
    assert is_published(old_key)
    with pytest.raises(SecretPolicyError, match="published") as err:
        check_secret("weaviate.api_key", old_key, min_bytes=1)
    assert old_key not in str(err.value)
    check_secret("x", "r" * 32)


def test_compose_and_chart_have_no_fallback_secret() -> None:
    compose = (REPO / "deploy/compose/docker-compose.yml").read_text()
    assert ":-ragstream" not in compose and "${RAGSTREAM_JWT_SECRET:?" in compose
    assert "${RAGSTREAM_WEAVIATE_API_KEY:?" in compose
    values = (REPO / "deploy/helm/ragstream/values.yaml").read_text()
    assert 'STACK__LOCAL_MODE: "false"' in values
