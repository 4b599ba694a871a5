"""Caller authentication: a verified credential in, a `Principal` (tenant, subject, groups) out.

Two credentials are accepted:
- `Authorization: Bearer <JWT>`: HS256 signed with `auth.jwt_secret`, or RS256 (and the other asymmetric
  algorithms listed in `auth.jwt_algorithms`) verified with a key from a JWKS (`auth.jwks_url` or
  `auth.jwks_file`). Issuer, audience and expiry are always checked; claims `sub` and `tenant` are required,
  `groups` is optional.
- `X-API-Key: <key>`: looked up in `auth.api_keys` (key -> {"tenant", "subject", "groups"}).

Tenant, subject and groups come only from here, never from a request body. Every principal also carries
`auth.everyone_group`.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import jwt
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ragstream.settings import AuthSettings
from schemas.envelope import TenantId
from schemas.serving import Caller

_TENANT = TypeAdapter(TenantId)
_HMAC_ALGS = frozenset({"HS256", "HS384", "HS512"})


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
    tenant: object, subject: object, groups: object, method: Literal["jwt", "api_key"], everyone: str
) -> Principal:
    if not isinstance(subject, str) or not subject:
        raise AuthError("credential has no subject")
    try:
        tenant_id = _TENANT.validate_python(tenant)
    except ValidationError as exc:
        raise AuthError("credential has no valid tenant") from exc
    if groups is None:
        groups = []
    if not isinstance(groups, list | tuple) or not all(isinstance(g, str) for g in groups):
        raise AuthError("credential groups must be a list of strings")
    all_groups = tuple(sorted({*groups, everyone} if everyone else set(groups)))
    return Principal(tenant_id=tenant_id, subject=subject, groups=all_groups, auth_method=method)


class Authenticator:
    """Verifies bearer tokens and API keys against `AuthSettings`."""

    def __init__(self, cfg: AuthSettings) -> None:
        self.cfg = cfg
        self._secret = cfg.jwt_secret.get_secret_value()
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
        if alg not in self.cfg.jwt_algorithms:
            raise AuthError(f"token algorithm {alg!r} is not accepted")
        key = self._secret if alg in _HMAC_ALGS else self._public_key(token, header.get("kid"))
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
        return _principal(
            claims.get("tenant"), claims.get("sub"), claims.get("groups"), "jwt", self.cfg.everyone_group
        )

    def verify_api_key(self, key: str) -> Principal:
        """An API key -> the Principal configured for it (constant-time comparison)."""
        match: dict[str, object] | None = None
        for known, entry in self.cfg.api_keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                match = entry
        if match is None:
            raise AuthError("unknown API key")
        return _principal(
            match.get("tenant"),
            match.get("subject"),
            match.get("groups"),
            "api_key",
            self.cfg.everyone_group,
        )

    def _public_key(self, token: str, kid: str | None) -> Any:
        """The JWKS key that signed `token` (by `kid`; the only key when the set has one)."""
        try:
            if self._jwks_client is not None:
                return self._jwks_client.get_signing_key_from_jwt(token).key
            if self.cfg.jwks_file:
                return self._from_file(kid).key
        except (jwt.PyJWTError, OSError, ValueError) as exc:
            raise AuthError(f"no trusted key for this token: {exc}") from exc
        raise AuthError("asymmetric tokens need auth.jwks_url or auth.jwks_file")

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
    """An HS256 token signed with the local development key (`auth.jwt_secret`)."""
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
