"""Token forgeries PyJWT refuses to produce (it will not HMAC with a PEM key): built by hand for the tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_by_hand(claims: dict[str, object], key: bytes) -> str:
    """An HS256 JWS over `claims` keyed with arbitrary bytes (e.g. the RSA public key: key confusion)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"
