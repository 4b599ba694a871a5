"""Folder-diff publishing behind `ragstream publish`: publish only what changed since the last publish.

The manifest of the last publish (relative path -> sha256) is kept per tenant and folder under the state
dir; new and changed files become upserts, removed files become deletes, unchanged files send nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
    unchanged: int = 0

    @property
    def total(self) -> int:
        return len(self.new) + len(self.changed) + len(self.removed)


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


def load_manifest(path: Path) -> dict[str, str]:
    try:
        return dict(json.loads(path.read_text())["files"])
    except (OSError, ValueError, KeyError):
        return {}


def save_manifest(path: Path, root: Path, files: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"root": str(root.resolve()), "files": files}, indent=1, sort_keys=True))
    tmp.replace(path)


def diff(root: Path, previous: dict[str, str]) -> tuple[FolderDiff, dict[str, str]]:
    d = FolderDiff()
    current: dict[str, str] = {}
    for entry in walk(root):
        current[entry.rel] = entry.sha256
        old = previous.get(entry.rel)
        if old is None:
            d.new.append(entry)
        elif old != entry.sha256:
            d.changed.append(entry)
        else:
            d.unchanged += 1
    d.removed = sorted(set(previous) - set(current))
    return d, current
