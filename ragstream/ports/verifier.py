"""The verifier port: an answer's claims judged against the passages each cites.

`ragstream.adapters.verifier.ModelVerifier` implements it with the configured OpenAI-compatible model;
tests pass a fake. Judging is bounded in time: a claim the verifier could not judge in its budget (or when
the model was unreachable) has the verdict None, never an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ragstream.core.verify import Claim


class ClaimVerdicts(Protocol):
    """Per claim: True (supported), False (not supported) or None (not judged)."""

    @property
    def verdicts(self) -> tuple[bool | None, ...]: ...

    @property
    def seconds(self) -> float: ...


class Verifier(Protocol):
    def verify_claims(self, claims: Sequence[Claim]) -> ClaimVerdicts:
        """One verdict per claim, in order, within the verifier's time budget."""
        ...
