"""When an answer goes to human review (pure): the scorers' verdicts in, the reasons out."""

from __future__ import annotations

from collections.abc import Mapping

from schemas.review import FlagReason


def flag_reasons(
    support_share: float, citation_support: Mapping[str, bool], min_support: float
) -> tuple[FlagReason, ...]:
    """`low_support` below `min_support`; `unsupported_citation` when any cited passage fails to support
    a sentence citing it. Empty: the answer needs no review."""
    reasons: list[FlagReason] = []
    if support_share < min_support:
        reasons.append("low_support")
    if any(not ok for ok in citation_support.values()):
        reasons.append("unsupported_citation")
    return tuple(reasons)
