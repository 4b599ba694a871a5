"""Gateway authentication: HS256 and RS256 (JWKS file) tokens, API keys, and what is refused."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pydantic import SecretStr

from gateway.auth import AuthConfigError, Authenticator, AuthError, Principal, mint_token
from ragstream.core.secrets import is_published
from ragstream.settings import AuthSettings
from tests.support.jwt_forge import hs256_by_hand

pytestmark = pytest.mark.unit
CFG = AuthSettings(
    jwt_secret=SecretStr(secrets.token_urlsafe(48)),  # generated per run: no secret in the repository
    api_keys={
        "key-acme-1": {"tenant": "acme", "subject": "svc-reports", "groups": ["finance"]},
        "key-bad": {"tenant": "no such/tenant", "subject": "x"},
    },
)


def _claims(**over: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": CFG.jwt_issuer,
        "aud": CFG.jwt_audience,
        "sub": "alice",
        "tenant": "acme",
        "groups": ["finance"],
        "iat": now,
        "exp": now + 600,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _hs(**over: object) -> str:
    return jwt.encode(_claims(**over), CFG.jwt_secret.get_secret_value(), algorithm="HS256")


def test_minted_token_gives_principal_from_claims_only() -> None:
    p = Authenticator(CFG).authenticate(mint_token(CFG, "acme", "alice", ["finance"]), None)
    assert p == Principal(tenant_id="acme", subject="alice", groups=("everyone", "finance"))
    assert p.caller().subject == "alice" and "finance" in p.caller().groups


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (_hs(exp=int(time.time()) - 3600), "expired"),
        (_hs(aud="someone-else"), "audience"),
        (_hs(iss="evil-issuer"), "issuer"),
        (jwt.encode(_claims(), "not-the-key-but-long-enough-for-hs256-0123456789", algorithm="HS256"), "sig"),
        (_hs(tenant=None), "tenant"),
        (_hs(tenant="bad tenant!"), "tenant"),
        (_hs(sub=None), "sub"),
        (_hs(exp=None), "exp"),
        (_hs(groups="finance"), "groups"),
        ("not.a.jwt", "malformed"),
        (jwt.encode(_claims(), None, algorithm="none"), "alg none"),
    ],
)
def test_bad_tokens_are_refused(token: str, why: str) -> None:
    with pytest.raises(AuthError):
        Authenticator(CFG).verify_token(token)


def test_expired_names_the_reason() -> None:
    with pytest.raises(AuthError, match="expired"):
        Authenticator(CFG).verify_token(_hs(exp=int(time.time()) - 3600))


def test_leeway_accepts_clock_skew() -> None:
    p = Authenticator(CFG).verify_token(_hs(exp=int(time.time()) - 2))
    assert p.subject == "alice"


@pytest.fixture(scope="module")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return key, path


def test_rs256_via_jwks_file(rsa_keys: tuple[rsa.RSAPrivateKey, Path]) -> None:
    key, path = rsa_keys
    auth = Authenticator(CFG.model_copy(update={"jwks_file": str(path)}))
    token = jwt.encode(_claims(sub="bob", groups=[]), key, algorithm="RS256", headers={"kid": "k1"})
    p = auth.authenticate(token, None)
    assert (p.tenant_id, p.subject, p.groups) == ("acme", "bob", ("everyone",))


def test_rs256_refused_with_unknown_kid_other_key_or_no_jwks(
    rsa_keys: tuple[rsa.RSAPrivateKey, Path],
) -> None:
    key, path = rsa_keys
    auth = Authenticator(CFG.model_copy(update={"jwks_file": str(path)}))
    with pytest.raises(AuthError, match="kid"):
        auth.verify_token(jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": "k2"}))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError):
        auth.verify_token(jwt.encode(_claims(), other, algorithm="RS256", headers={"kid": "k1"}))
    with pytest.raises(AuthError, match="not accepted"):
        Authenticator(CFG).verify_token(jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": "k1"}))


def test_hs256_token_cannot_pose_as_rs256(rsa_keys: tuple[rsa.RSAPrivateKey, Path]) -> None:
    _, path = rsa_keys
    auth = Authenticator(CFG.model_copy(update={"jwks_file": str(path), "jwt_algorithms": ("RS256",)}))
    with pytest.raises(AuthError, match="not accepted"):
        auth.verify_token(_hs())


def test_api_keys_map_to_configured_principal() -> None:
    auth = Authenticator(CFG)
    p = auth.authenticate(None, "key-acme-1")
    assert p == Principal(
        tenant_id="acme", subject="svc-reports", groups=("everyone", "finance"), auth_method="api_key"
    )
    assert p.caller().auth_method == "api_key"
    with pytest.raises(AuthError, match="unknown"):
        auth.authenticate(None, "key-acme-2")
    with pytest.raises(AuthError, match="tenant"):
        auth.authenticate(None, "key-bad")


def test_missing_credential() -> None:
    with pytest.raises(AuthError, match="missing"):
        Authenticator(CFG).authenticate(None, None)


def test_bearer_wins_over_api_key() -> None:
    p = Authenticator(CFG).authenticate(mint_token(CFG, "globex", "carol"), "key-acme-1")
    assert (p.tenant_id, p.subject) == ("globex", "carol")


# --- secure by default: what the configuration itself allows ---------------------------------------------


def _jwks_only(path: Path, **over: object) -> AuthSettings:
    return AuthSettings(jwks_file=str(path), jwt_issuer="https://idp.example", **over)  # type: ignore[arg-type]


def test_no_default_secret_and_no_verifier_refuses_to_start() -> None:
    assert AuthSettings().jwt_secret is None
    with pytest.raises(AuthConfigError, match="no way to verify"):
        Authenticator(AuthSettings())
    with pytest.raises(AuthConfigError, match="jwt_secret"):
        mint_token(AuthSettings(), "acme", "alice")


@pytest.mark.parametrize("secret", ["short-secret", "x" * 31])
def test_short_secret_refuses_to_start(secret: str) -> None:
    with pytest.raises(AuthConfigError, match="32 bytes"):
        Authenticator(AuthSettings(jwt_secret=SecretStr(secret)))


def test_secret_once_published_in_the_repository_refuses_to_start() -> None:
    # The old shipped default, rebuilt here from parts so the literal is not in the tree as a secret.
    old = "-".join(["ragstream", "local", "dev", "signing", "key", "change", "me", "0123456789"])
    assert is_published(old)
    with pytest.raises(AuthConfigError, match="published"):
        Authenticator(AuthSettings(jwt_secret=SecretStr(old)))


def test_jwks_only_gateway_refuses_hs256_signed_with_any_secret(
    rsa_keys: tuple[rsa.RSAPrivateKey, Path],
) -> None:
    key, path = rsa_keys
    auth = Authenticator(_jwks_only(path))
    assert "HS256" not in auth.algorithms
    old = "-".join(["ragstream", "local", "dev", "signing", "key", "change", "me", "0123456789"])
    forged = _claims(iss="https://idp.example", tenant="victim", groups=["admins"])
    with pytest.raises(AuthError, match="not accepted"):
        auth.verify_token(jwt.encode(forged, old, algorithm="HS256"))
    # Key confusion: HS256 "signed" with the RSA public key the gateway trusts.
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = hs256_by_hand(forged, pem)
    with pytest.raises(AuthError, match="not accepted"):
        auth.verify_token(confused)
    # Positive control: the same claims signed by the IdP's key are accepted.
    p = auth.verify_token(jwt.encode(forged, key, algorithm="RS256", headers={"kid": "k1"}))
    assert p.tenant_id == "victim"


def test_jwt_algorithms_narrow_never_widen(rsa_keys: tuple[rsa.RSAPrivateKey, Path]) -> None:
    _, path = rsa_keys
    with pytest.raises(AuthConfigError, match="HS"):
        Authenticator(_jwks_only(path, jwt_algorithms=("HS256", "RS256")))
    auth = Authenticator(_jwks_only(path, jwt_algorithms=("ES256",)))
    assert auth.algorithms == {"ES256"}


def test_rsa_key_is_not_used_with_another_family(rsa_keys: tuple[rsa.RSAPrivateKey, Path]) -> None:
    key, path = rsa_keys
    auth = Authenticator(_jwks_only(path))
    token = jwt.encode(_claims(iss="https://idp.example"), key, algorithm="PS256", headers={"kid": "k1"})
    with pytest.raises(AuthError, match="does not match"):  # the JWK declares alg RS256
        auth.verify_token(token)


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"groups": [f"g{i}" for i in range(10_000)]}, "more than"),
        ({"groups": ["x" * 1000]}, "at most"),
        ({"groups": ["fin\nance"]}, "at most"),
        ({"groups": [""]}, "non-empty"),
        ({"sub": "a" * 10_000}, "subject"),
        ({"sub": "alice\x00admin"}, "subject"),
        ({"sub": "alice\u202eevil"}, "subject"),
    ],
)
def test_claims_are_bounded(over: dict[str, object], why: str) -> None:
    with pytest.raises(AuthError, match=why):
        Authenticator(CFG).verify_token(_hs(**over))
