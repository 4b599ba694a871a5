"""Folder-diff publishing behind `ragstream publish`: publish only what changed since the last publish.

The manifest of the last publish (relative path -> sha256, and the ACL each file was published with) is
kept per tenant and folder under the state dir; new and changed files become upserts, files whose content
is unchanged but whose ACL changed become `AclChanged` events (no re-embedding), removed files become
deletes, files unchanged in both send nothing. A manifest written before ACLs were recorded has no ACL
entry for a file: its ACL is unknown, so the file is re-published (an upsert with the current ACL; the
embedder sees the same content and only rewrites the ACL), never assumed unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from schemas.ingestion import Acl

SKIP_DIRS = {".git", "__pycache__", ".venv", "node_modules"}


@dataclass(frozen=True)
class FileEntry:
    rel: str
    path: Path
    sha256: str
    size: int


@dataclass
class FolderDiff:
    new: list[FileEntry] = field(default_factory=list)
    changed: list[FileEntry] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # Same content, different ACL than last published: an AclChanged event, no upsert.
    acl_changed: list[FileEntry] = field(default_factory=list)
    unchanged: int = 0

    @property
    def total(self) -> int:
        return len(self.new) + len(self.changed) + len(self.acl_changed) + len(self.removed)


@dataclass
class Manifest:
    """What the last publish sent: rel -> sha256, and rel -> ACL (a missing ACL entry means unknown)."""

    files: dict[str, str] = field(default_factory=dict)
    acls: dict[str, Acl] = field(default_factory=dict)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def walk(root: Path) -> Iterator[FileEntry]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if p.is_file():
                yield FileEntry(p.relative_to(root).as_posix(), p, _sha256(p), p.stat().st_size)


def manifest_path(state_dir: Path, tenant: str, root: Path) -> Path:
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return state_dir / "publish" / tenant / f"{digest}.json"


def load_manifest(path: Path) -> Manifest:
    """The last publish's manifest; an unreadable one is empty (everything is new), an old one (no
    "acls") has every ACL unknown."""
    try:
        data = json.loads(path.read_text())
        files = {str(k): str(v) for k, v in dict(data["files"]).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Manifest()
    acls: dict[str, Acl] = {}
    raw_acls = data.get("acls") if isinstance(data, dict) else None
    for rel, raw in (raw_acls if isinstance(raw_acls, dict) else {}).items():
        try:
            acls[str(rel)] = Acl.model_validate(raw)
        except ValueError:
            continue  # unreadable: unknown, so the file is re-published
    return Manifest(files, acls)


def save_manifest(path: Path, root: Path, manifest: Manifest) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    body = {
        "root": str(root.resolve()),
        "files": manifest.files,
        "acls": {rel: acl.model_dump(mode="json") for rel, acl in manifest.acls.items()},
    }
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
    tmp.replace(path)


def diff(root: Path, previous: Manifest, acl: Acl) -> tuple[FolderDiff, Manifest]:
    """What publishing `root` with `acl` must send, and the manifest to save once it was sent."""
    d = FolderDiff()
    current = Manifest()
    for entry in walk(root):
        current.files[entry.rel] = entry.sha256
        current.acls[entry.rel] = acl
        old = previous.files.get(entry.rel)
        old_acl = previous.acls.get(entry.rel)
        if old is None:
            d.new.append(entry)
        elif old != entry.sha256 or old_acl is None:
            # Content changed, or the ACL it was published with is unknown (old manifest): re-publish.
            d.changed.append(entry)
        elif old_acl != acl:
            d.acl_changed.append(entry)
        else:
            d.unchanged += 1
    d.removed = sorted(set(previous.files) - set(current.files))
    return d, current
