"""Security regression, credentials: forged and malformed tokens against the real gateway on the real stack.

The gateway here is configured the way an operator with an IdP would: JWKS only (RS256), a custom issuer, no
JWT secret. A tenant `victim` holds a finance-only document. Every forged credential must be a 401 that puts
nothing on the requests topic; the IdP-signed positive controls must get (finance) or not get (staff) the
document. Start-up refusals (short or once-published secrets) run the real `ragstream gateway serve`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from gateway.app import create_app
from gateway.server import serve_in_process
from producers.publisher import DocumentPublisher
from ragstream.adapters.llm import ExtractiveStub
from ragstream.core.prompt import ABSTAIN
from ragstream.runtime.deps import Deps
from ragstream.settings import AuthSettings, Settings
from schemas.ingestion import Acl
from schemas.topics import QUERIES_REQUESTED
from tests.support.jwt_forge import hs256_by_hand
from tests.support.kafka import read_all
from tests.support.pipeline import Harness, document_indexed, eventually, isolated_pipeline_settings

pytestmark = pytest.mark.integration
ALL = ("normalizer", "chunker", "embedder", "retrieval", "rerank", "generation")
ISSUER = "https://idp.example.test"
SECRET_DOC = "# Payroll\n\nThe victim payroll password rotation code is KESTREL-4471 and finance owns it."
QUESTION = "What is the payroll password rotation code?"
# The JWT secret that once shipped as the default, rebuilt from parts (not a usable literal in the tree).
OLD_DEFAULT = "-".join(["ragstream", "local", "dev", "signing", "key", "change", "me", "0123456789"])


@dataclass
class Env:
    s: Settings
    url: str
    key: rsa.RSAPrivateKey

    def claims(self, **over: object) -> dict[str, object]:
        now = int(time.time())
        base: dict[str, object] = {
            "iss": ISSUER,
            "aud": self.s.auth.jwt_audience,
            "sub": "mallory",
            "tenant": "victim",
            "groups": ["admins"],
            "iat": now,
            "exp": now + 600,
        }
        base.update(over)
        return {k: v for k, v in base.items() if v is not None}

    def idp(self, **over: object) -> str:
        return jwt.encode(self.claims(**over), self.key, algorithm="RS256", headers={"kid": "idp-1"})


@pytest.fixture(scope="module")
async def env(settings: Settings, embedder, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("sec-auth")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "idp-1", "use": "sig", "alg": "RS256"})
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    auth = AuthSettings(jwks_file=str(tmp / "jwks.json"), jwt_issuer=ISSUER)  # JWKS only: no secret
    s = isolated_pipeline_settings(settings, uuid.uuid4().hex[:10], auth=auth)
    async with Harness(s, embedder, ALL, deps=Deps(s, llm=ExtractiveStub()), tmp=tmp) as h:
        async with DocumentPublisher(s) as pub:
            await pub.upsert(
                "victim",
                "payroll.md",
                content=SECRET_DOC.encode(),
                mime_type="text/markdown",
                acl=Acl(groups=("finance",)),
            )
        await eventually(lambda: document_indexed(h, "victim", "payroll.md"))
        async with serve_in_process(create_app(s)) as url:
            yield Env(s, url, key)


async def _answer(env: Env, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=env.url, timeout=120) as c:
        return await c.post(
            "/v1/answer", json={"question": QUESTION}, headers={"Authorization": f"Bearer {token}"}
        )


async def test_forged_tokens_are_refused_and_publish_nothing(env: Env) -> None:
    before = {r.key for r in await read_all(env.s.kafka, QUERIES_REQUESTED.name)}
    wrong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = env.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = {
        "hs256 with the once-shipped secret": jwt.encode(env.claims(), OLD_DEFAULT, algorithm="HS256"),
        "hs256 with the RSA public key": hs256_by_hand(env.claims(), pem),
        "alg none": jwt.encode(env.claims(), None, algorithm="none"),
        "wrong key": jwt.encode(env.claims(), wrong, algorithm="RS256", headers={"kid": "idp-1"}),
        "expired": env.idp(exp=int(time.time()) - 3600),
        "wrong issuer": env.idp(iss="ragstream-local"),
        "wrong audience": env.idp(aud="someone-else"),
        "10,000 groups": env.idp(groups=[f"g{i}" for i in range(10_000)]),
        "control characters in sub": env.idp(sub="mallory\x00admin"),
    }
    for name, token in forged.items():
        r = await _answer(env, token)
        assert r.status_code == 401, (name, r.status_code, r.text)
        body = r.json()
        assert body["error"]["code"] and body["error"]["correlation_id"], (name, body)
        assert "KESTREL" not in r.text
    after = {r.key for r in await read_all(env.s.kafka, QUERIES_REQUESTED.name)}
    assert after == before  # nothing refused reached Kafka


async def test_idp_signed_positive_controls(env: Env) -> None:
    finance = await _answer(env, env.idp(groups=["finance"]))
    assert finance.status_code == 200, finance.text
    assert "KESTREL-4471" in finance.json()["answer"] and finance.json()["citations"]
    staff = await _answer(env, env.idp(groups=["staff"]))
    assert staff.status_code == 200, staff.text
    assert staff.json()["answer"] == ABSTAIN and staff.json()["citations"] == []
    assert "KESTREL" not in staff.text


def _serve(secret: str | None, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTREAM_")}
    env.update({"RAGSTREAM_STACK__LOCAL_MODE": "false", "XDG_STATE_HOME": str(tmp)})
    if secret is not None:
        env["RAGSTREAM_AUTH__JWT_SECRET"] = secret
    cmd = [sys.executable, "-m", "application.cli.main", "gateway", "serve", "--port", "0"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("secret", "says"),
    [(None, "no way to verify"), ("too-short", "32 bytes"), (OLD_DEFAULT, "published")],
)
def test_gateway_refuses_to_start_with_unsafe_auth(secret: str | None, says: str, tmp_path: Path) -> None:
    r = _serve(secret, tmp_path)
    assert r.returncode != 0
    assert says in r.stdout + r.stderr
    if secret:
        assert secret not in r.stdout + r.stderr  # the refusal never echoes the value
