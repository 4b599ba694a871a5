"""Caller authentication: a verified credential in, a `Principal` (tenant, subject, groups) out.

Two credentials are accepted:
- `Authorization: Bearer <JWT>`: HS256 signed with `auth.jwt_secret` (only when a secret is configured:
  there is no default), or an asymmetric algorithm verified with a key from a JWKS (`auth.jwks_url` or
  `auth.jwks_file`) whose type fits the token's algorithm. `auth.jwt_algorithms` can only narrow what the
  configuration allows. Issuer, audience and expiry are always checked; claims `sub` and `tenant` are
  required, `groups` is optional; subject and groups are bounded in size and free of control characters.
- `X-API-Key: <key>`: looked up in `auth.api_keys` (key -> {"tenant", "subject", "groups"}).

Tenant, subject and groups come only from here, never from a request body. Every principal also carries
`auth.everyone_group`.
"""

from __future__ import annotations

import hmac
import json
import time
import unicodedata
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import jwt
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ragstream.core.secrets import check_secret
from ragstream.settings import AuthSettings
from schemas.envelope import TenantId
from schemas.serving import Caller

_TENANT = TypeAdapter(TenantId)
_HMAC_ALGS = frozenset({"HS256", "HS384", "HS512"})
# Asymmetric algorithms by JWK key type: a key is used only with an algorithm of its own family.
_ALGS_BY_KTY = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
}
_ASYMMETRIC = frozenset().union(*_ALGS_BY_KTY.values())


class AuthConfigError(ValueError):
    """The authentication settings are unsafe or cannot verify anyone: the gateway refuses to start."""


def allowed_algorithms(cfg: AuthSettings) -> frozenset[str]:
    """The token algorithms this configuration can verify: HS256 only with an explicit secret, asymmetric
    ones only with a JWKS; `jwt_algorithms` narrows, never widens."""
    allowed: set[str] = set()
    if cfg.jwt_secret is not None:
        allowed |= {"HS256"} if cfg.jwt_algorithms is None else _HMAC_ALGS
    if cfg.jwks_url or cfg.jwks_file:
        allowed |= _ASYMMETRIC
    if cfg.jwt_algorithms is not None:
        asked = set(cfg.jwt_algorithms)
        if asked & _HMAC_ALGS and cfg.jwt_secret is None:
            raise AuthConfigError("auth.jwt_algorithms lists HS* but no auth.jwt_secret is configured")
        allowed &= asked
    return frozenset(allowed)


def _control_free(value: str) -> bool:
    return not any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} for ch in value)


class AuthError(Exception):
    """The credential is missing, malformed, expired, or not signed by a trusted key (-> 401)."""


class Principal(BaseModel):
    """Who is calling, as proven by the credential."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    tenant_id: TenantId
    subject: str
    groups: tuple[str, ...] = ()
    auth_method: Literal["jwt", "api_key"] = "jwt"

    def caller(self) -> Caller:
        """The identity that travels with the query event."""
        return Caller(subject=self.subject, groups=self.groups, auth_method=self.auth_method)


def _principal(
    cfg: AuthSettings, tenant: object, subject: object, groups: object, method: Literal["jwt", "api_key"]
) -> Principal:
    if not isinstance(subject, str) or not subject:
        raise AuthError("credential has no subject")
    if len(subject) > cfg.max_subject_chars or not _control_free(subject):
        raise AuthError(f"credential subject must be at most {cfg.max_subject_chars} printable characters")
    try:
        tenant_id = _TENANT.validate_python(tenant)
    except ValidationError as exc:
        raise AuthError("credential has no valid tenant") from exc
    if groups is None:
        groups = []
    if not isinstance(groups, list | tuple) or not all(isinstance(g, str) and g for g in groups):
        raise AuthError("credential groups must be a list of non-empty strings")
    if len(groups) > cfg.max_groups:
        raise AuthError(f"credential has more than {cfg.max_groups} groups")
    if any(len(g) > cfg.max_group_chars or not _control_free(g) for g in groups):
        raise AuthError(f"credential groups must be at most {cfg.max_group_chars} printable characters each")
    everyone = cfg.everyone_group
    all_groups = tuple(sorted({*groups, everyone} if everyone else set(groups)))
    return Principal(tenant_id=tenant_id, subject=subject, groups=all_groups, auth_method=method)


class Authenticator:
    """Verifies bearer tokens and API keys against `AuthSettings`."""

    def __init__(self, cfg: AuthSettings) -> None:
        self.cfg = cfg
        self._secret = cfg.jwt_secret.get_secret_value() if cfg.jwt_secret is not None else None
        if self._secret is not None:
            try:
                check_secret("auth.jwt_secret", self._secret)
            except ValueError as exc:
                raise AuthConfigError(str(exc)) from exc
        self.algorithms = allowed_algorithms(cfg)
        if not self.algorithms and not cfg.api_keys:
            raise AuthConfigError(
                "no way to verify callers: configure auth.jwks_url / auth.jwks_file, auth.jwt_secret "
                "(>= 32 random bytes) or auth.api_keys (locally, `ragstream stack up` generates a secret)"
            )
        self._jwks_client = jwt.PyJWKClient(cfg.jwks_url, lifespan=300) if cfg.jwks_url else None
        self._jwks_file: jwt.PyJWKSet | None = None

    def authenticate(self, bearer: str | None, api_key: str | None) -> Principal:
        """A bearer token (preferred) or an API key -> Principal; AuthError when neither verifies."""
        if bearer:
            return self.verify_token(bearer)
        if api_key:
            return self.verify_api_key(api_key)
        raise AuthError("missing credential: send 'Authorization: Bearer <token>' or 'X-API-Key'")

    def verify_token(self, token: str) -> Principal:
        """A JWT -> Principal, checking signature, algorithm, issuer, audience, expiry."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"malformed token: {exc}") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError(f"token algorithm {str(alg)[:16]!r} is not accepted")
        key = self._secret if alg in _HMAC_ALGS else self._public_key(token, header.get("kid"), alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.cfg.jwt_audience,
                issuer=self.cfg.jwt_issuer,
                leeway=self.cfg.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        return _principal(self.cfg, claims.get("tenant"), claims.get("sub"), claims.get("groups"), "jwt")

    def verify_api_key(self, key: str) -> Principal:
        """An API key -> the Principal configured for it (constant-time comparison)."""
        match: dict[str, object] | None = None
        for known, entry in self.cfg.api_keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                match = entry
        if match is None:
            raise AuthError("unknown API key")
        return _principal(self.cfg, match.get("tenant"), match.get("subject"), match.get("groups"), "api_key")

    def _public_key(self, token: str, kid: str | None, alg: str) -> Any:
        """The JWKS key that signed `token` (by `kid`; the only key when the set has one), used only with
        an algorithm of its own type (and its declared `alg`, when it declares one)."""
        try:
            if self._jwks_client is not None:
                jwk = self._jwks_client.get_signing_key_from_jwt(token)
            elif self.cfg.jwks_file:
                jwk = self._from_file(kid)
            else:
                raise AuthError("asymmetric tokens need auth.jwks_url or auth.jwks_file")
        except (jwt.PyJWTError, OSError, ValueError) as exc:
            raise AuthError("no trusted key for this token") from exc
        data = getattr(jwk, "_jwk_data", {}) or {}
        declared = data.get("alg")
        if alg not in _ALGS_BY_KTY.get(str(data.get("kty")), frozenset()) or (declared and declared != alg):
            raise AuthError(f"token algorithm {alg!r} does not match its key")
        return jwk.key

    def _from_file(self, kid: str | None) -> jwt.PyJWK:
        for reload in (False, True):  # re-read once on an unknown kid: the file may have been rotated
            if self._jwks_file is None or reload:
                assert self.cfg.jwks_file is not None
                data = json.loads(Path(self.cfg.jwks_file).read_text())
                self._jwks_file = jwt.PyJWKSet.from_dict(data)
            keys = self._jwks_file.keys
            if kid is None and len(keys) == 1:
                return keys[0]
            for k in keys:
                if k.key_id == kid:
                    return k
        raise AuthError(f"kid {kid!r} is not in the JWKS file")


def mint_token(
    cfg: AuthSettings,
    tenant: str,
    subject: str,
    groups: Iterable[str] = (),
    ttl_s: int | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token signed with `auth.jwt_secret` (the local stack generates one; there is no default)."""
    if cfg.jwt_secret is None:
        raise AuthConfigError("minting needs auth.jwt_secret (run `ragstream stack up` locally)")
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": cfg.jwt_issuer,
        "aud": cfg.jwt_audience,
        "sub": subject,
        "tenant": tenant,
        "groups": list(groups),
        "iat": issued,
        "exp": issued + (ttl_s if ttl_s is not None else cfg.token_ttl_s),
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, cfg.jwt_secret.get_secret_value(), algorithm="HS256")
