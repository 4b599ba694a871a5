"""Secret policy: what a configured secret must be before a process may start with it.

Pure (no I/O). Values that ever appeared in the repository are kept only as SHA-256 digests, so the
check can refuse them without the repository carrying them again.
"""

from __future__ import annotations

import hashlib

MIN_SECRET_BYTES = 32

# sha256 of every default secret that shipped in earlier versions of this repository (JWT signing key,
# Weaviate API key). A deployment that copied one of them from an old README or compose file must not start.
_PUBLISHED_SHA256 = frozenset(
    {
        "ce50b63608392f9628ed40df4ad05a4a99cd10005e8377da87ed073b15b94c38",
        "9e77c7a64c6bbde2e5e5d0c6b8fb54f97af47bc5c8fe2fa557ee443cb5bbfded",
    }
)


class SecretPolicyError(ValueError):
    """A configured secret is too short or publicly known: refuse to start."""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def is_published(value: str) -> bool:
    """True when `value` is a secret that appeared in this repository at some point."""
    return digest(value) in _PUBLISHED_SHA256


def check_secret(name: str, value: str, min_bytes: int = MIN_SECRET_BYTES) -> None:
    """Raise SecretPolicyError (naming the setting, never echoing the value) unless `value` is usable."""
    if is_published(value):
        raise SecretPolicyError(
            f"{name} is a value published in the ragstream repository; generate your own "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
        )
    if len(value.encode()) < min_bytes:
        raise SecretPolicyError(
            f"{name} is shorter than {min_bytes} bytes; use a random value of at least that"
        )
