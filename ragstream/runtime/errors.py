"""The two error classes a handler raises: the worker retries the first and dead-letters the second."""

from __future__ import annotations


class TransientError(Exception):
    """Retry later; the effect may succeed once a dependency is back."""


class PermanentError(Exception):
    """This record can never succeed: dead-letter it with a reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
