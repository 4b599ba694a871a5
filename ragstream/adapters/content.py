"""Reading `file://` content references, confined to the configured content roots.

A content reference comes from an event anyone who can publish may write, so it is untrusted input:
- only `file://` URIs (local host) whose path, after resolving symlinks and `..`, lies under a resolved
  root of `settings.ingest.content_roots`; no roots configured means no `file://` at all;
- only regular files, checked on the opened descriptor (not just the name), opened one path component
  at a time without following symlinks, so a component swapped for a symlink after the check fails;
- at most `max_bytes + 1` bytes are read: a file's `stat` size is not trusted (0 for /proc files).

Every refusal is a `ContentRefError` with a reason a dead letter can carry.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

URI_NOT_ALLOWED = "uri_not_allowed"
NOT_A_REGULAR_FILE = "not_a_regular_file"
OVERSIZED = "oversized"
CONTENT_UNAVAILABLE = "content_unavailable"

_READ_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused as not regular right after.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class ContentRefError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def file_uri_path(uri: str) -> Path:
    """The absolute local path of a `file://` URI; any other URI is not allowed (pure, no I/O)."""
    parsed = urlparse(uri or "")
    if parsed.scheme != "file":
        raise ContentRefError(URI_NOT_ALLOWED, f"content_uri scheme {parsed.scheme!r} is not allowed")
    if parsed.netloc not in ("", "localhost"):
        raise ContentRefError(URI_NOT_ALLOWED, f"content_uri host {parsed.netloc!r} is not allowed")
    raw = unquote(parsed.path)
    if not raw.startswith("/") or "\x00" in raw:
        raise ContentRefError(URI_NOT_ALLOWED, "content_uri must name an absolute local path")
    return Path(raw)


def _resolved_roots(roots: Iterable[Path]) -> list[Path]:
    out = []
    for root in roots:
        try:
            out.append(Path(root).resolve(strict=True))
        except OSError:
            continue  # a missing root holds nothing
    return out


def confine(path: Path, roots: Iterable[Path]) -> tuple[Path, Path]:
    """(root, resolved path) for `path` under one of `roots`, symlinks and `..` resolved."""
    resolved_roots = _resolved_roots(roots)
    if not resolved_roots:
        raise ContentRefError(URI_NOT_ALLOWED, "file:// content is not allowed: no content roots configured")

    def under(p: Path) -> Path | None:
        return next((r for r in resolved_roots if p.is_relative_to(r)), None)

    # Outside first, whether or not it exists: a refusal must not tell which paths exist elsewhere.
    try:
        loose = path.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise ContentRefError(URI_NOT_ALLOWED, f"{path} cannot be resolved: {exc}") from exc
    if under(loose) is None:
        raise ContentRefError(URI_NOT_ALLOWED, f"{path} is outside the content roots")
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise ContentRefError(CONTENT_UNAVAILABLE, f"cannot read {path}: {exc}") from exc
    root = under(resolved)
    if root is None:
        raise ContentRefError(URI_NOT_ALLOWED, f"{path} is outside the content roots")
    return root, resolved


def _open_beneath(root: Path, resolved: Path) -> int:
    """Open `resolved` (under `root`) walking one component at a time, never following a symlink."""
    parts = resolved.relative_to(root).parts
    if not parts:
        raise ContentRefError(NOT_A_REGULAR_FILE, f"{resolved} is a directory")
    fd = os.open(root, _DIR_FLAGS)
    try:
        for name in parts[:-1]:
            nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)


def read_file_uri(uri: str, roots: Iterable[Path], max_bytes: int) -> bytes:
    """The bytes of a confined `file://` reference, at most `max_bytes`; otherwise ContentRefError."""
    root, resolved = confine(file_uri_path(uri), roots)
    try:
        pre = os.stat(resolved, follow_symlinks=False)
    except OSError as exc:
        raise ContentRefError(CONTENT_UNAVAILABLE, f"cannot read {resolved}: {exc}") from exc
    if not stat.S_ISREG(pre.st_mode):
        raise ContentRefError(NOT_A_REGULAR_FILE, f"{resolved} is not a regular file")
    try:
        fd = _open_beneath(root, resolved)
    except OSError as exc:
        # ELOOP/ENOTDIR: a component became a symlink (or changed type) after the check.
        raise ContentRefError(CONTENT_UNAVAILABLE, f"cannot open {resolved}: {exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ContentRefError(NOT_A_REGULAR_FILE, f"{resolved} is not a regular file")
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise ContentRefError(CONTENT_UNAVAILABLE, f"cannot read {resolved}: {exc}") from exc
    finally:
        os.close(fd)
    if total > max_bytes:
        raise ContentRefError(OVERSIZED, f"document is over {max_bytes} bytes, the limit")
    return b"".join(chunks)
