"""Authorization as pure functions: who may read a chunk, and the filter terms the search applies."""

from __future__ import annotations

from collections.abc import Iterable

from schemas.serving import Caller, Passage


def caller_terms(caller: Caller) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(principals, groups) a chunk's ACL must intersect for this caller."""
    return (caller.subject,), tuple(sorted(set(caller.groups)))


def may_read(principals: Iterable[str], groups: Iterable[str], caller: Caller) -> bool:
    """Default deny: an empty ACL is readable by nobody."""
    p, g = caller_terms(caller)
    return bool(set(principals) & set(p)) or bool(set(groups) & set(g))


def passage_allowed(passage: Passage, caller: Caller) -> bool:
    return may_read(passage.acl_principals, passage.acl_groups, caller)
