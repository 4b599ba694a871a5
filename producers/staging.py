"""Stage a large file for the normalizer: a content-addressed copy under the first content root.

The normalizer reads `file://` references only under `settings.ingest.content_roots`, so a file too large
to travel inline is copied to `<root>/<tenant>/<sha256>` (temp file + os.replace: a reader never sees a
partial copy; an existing copy is reused) and that URI is published, never the user's own path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

from ragstream.settings import Settings
from schemas.ingestion import INLINE_CONTENT_MAX_BYTES

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # schemas.envelope.TenantId: one path component
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class StagingError(RuntimeError):
    pass


def stage_content(settings: Settings, tenant: str, src: Path, sha256: str) -> str:
    """The `file://` URI of a copy of `src` (whose SHA-256 is `sha256`) under the first content root."""
    roots = settings.ingest.content_roots
    if not roots:
        raise StagingError(
            f"file over {INLINE_CONTENT_MAX_BYTES} bytes needs settings.ingest.content_roots "
            f"or an object store: {src}"
        )
    if not _TENANT.match(tenant):
        raise StagingError(f"tenant {tenant!r} is not a valid tenant id")
    if not _SHA256.match(sha256):
        raise StagingError(f"{sha256!r} is not a SHA-256 hex digest")
    folder = Path(roots[0]).resolve() / tenant
    dest = folder / sha256
    if dest.is_file():
        return dest.as_uri()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{sha256[:16]}.", suffix=".tmp")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, src.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise StagingError(f"{src} changed while it was being published; publish again")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dest.as_uri()
