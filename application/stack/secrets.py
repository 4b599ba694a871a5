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

from application.stack.manager import stack_home
from ragstream.settings import Settings

SECRETS_FILE = "secrets.json"
CONTENT_DIR = "content"


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
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    os.replace(tmp, path)
    return values


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
