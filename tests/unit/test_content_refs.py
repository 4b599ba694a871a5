"""Content references are confined: file:// only under the content roots, regular files only, size capped."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from consumers.ingestion import normalizer
from producers.staging import StagingError, stage_content
from ragstream.adapters import content
from ragstream.adapters.content import ContentRefError, confine, file_uri_path, read_file_uri
from ragstream.core.normalize import SUPPORTED
from ragstream.indexing.transforms import format_label, load_content, to_normalized
from ragstream.runtime.deps import Deps
from ragstream.runtime.worker import PermanentError
from ragstream.settings import Settings
from schemas.ingestion import INLINE_CONTENT_MAX_BYTES, Acl, DocumentChanged

pytestmark = pytest.mark.unit
MAX = 1000


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "content"
    r.mkdir()
    (r / "t1").mkdir()
    (r / "t1" / "doc.txt").write_bytes(b"inside the root")
    return r


def reason(uri: str, roots: tuple[Path, ...], max_bytes: int = MAX) -> str:
    with pytest.raises(ContentRefError) as exc:
        read_file_uri(uri, roots, max_bytes)
    return exc.value.reason


def event(uri: str | None = None, content: bytes | None = None, mime: str = "text/plain") -> DocumentChanged:
    return DocumentChanged(
        tenant_id="t1",
        op="upsert",
        document_id="d",
        content_uri=uri,
        content_b64=base64.b64encode(content).decode() if content is not None else None,
        mime_type=mime,
        acl=Acl(groups=("everyone",)),
    )


def test_inside_root_is_read(root: Path) -> None:
    assert read_file_uri((root / "t1" / "doc.txt").as_uri(), (root,), MAX) == b"inside the root"


def test_inside_root_through_a_symlinked_root_and_an_inner_symlink(root: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    (root / "t1" / "link.txt").symlink_to(root / "t1" / "doc.txt")
    assert read_file_uri((alias / "t1" / "link.txt").as_uri(), (alias,), MAX) == b"inside the root"
    assert read_file_uri((root / "t1" / "link.txt").as_uri(), (alias,), MAX) == b"inside the root"


def test_percent_encoded_path_inside_root(root: Path) -> None:
    (root / "t1" / "a b.txt").write_bytes(b"spaced")
    assert read_file_uri((root / "t1" / "a b.txt").as_uri(), (root,), MAX) == b"spaced"


def test_dotdot_escape_is_not_allowed(root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_bytes(b"secret")
    assert reason(f"file://{root}/t1/../../secret.txt", (root,)) == "uri_not_allowed"
    assert reason(f"file://{root}/t1/%2e%2e/%2e%2e/secret.txt", (root,)) == "uri_not_allowed"
    assert reason(f"file://{root}/missing/../../secret.txt", (root,)) == "uri_not_allowed"


def test_sibling_with_root_as_name_prefix_is_outside(root: Path, tmp_path: Path) -> None:
    sibling = tmp_path / "content-evil"
    sibling.mkdir()
    (sibling / "x.txt").write_bytes(b"x")
    assert reason((sibling / "x.txt").as_uri(), (root,)) == "uri_not_allowed"


def test_symlink_pointing_outside_is_not_allowed(root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (root / "t1" / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (root / "t1" / "passwd").symlink_to("/etc/passwd")
    (root / "t1" / "dir").symlink_to(tmp_path)
    assert reason((root / "t1" / "escape.txt").as_uri(), (root,)) == "uri_not_allowed"
    assert reason((root / "t1" / "passwd").as_uri(), (root,)) == "uri_not_allowed"
    assert reason((root / "t1" / "dir" / "secret.txt").as_uri(), (root,)) == "uri_not_allowed"


def test_symlink_loop_is_refused(root: Path) -> None:
    (root / "t1" / "a").symlink_to(root / "t1" / "b")
    (root / "t1" / "b").symlink_to(root / "t1" / "a")
    assert reason((root / "t1" / "a").as_uri(), (root,)) in {"uri_not_allowed", "content_unavailable"}


def test_etc_passwd_is_not_allowed(root: Path) -> None:
    assert reason("file:///etc/passwd", (root,)) == "uri_not_allowed"
    assert reason("file://localhost/etc/passwd", (root,)) == "uri_not_allowed"


def test_dev_zero_and_proc_are_outside(root: Path) -> None:
    assert reason("file:///dev/zero", (root,)) == "uri_not_allowed"
    assert reason("file:///proc/self/status", (root,)) == "uri_not_allowed"


def test_device_under_a_root_is_not_a_regular_file() -> None:
    # Even a (mis)configured root holding devices never reads one: /dev/zero would never end.
    assert reason("file:///dev/zero", (Path("/dev"),)) == "not_a_regular_file"
    assert reason("file:///dev/null", (Path("/dev"),)) == "not_a_regular_file"


def test_proc_file_with_stat_size_zero_is_still_capped() -> None:
    # /proc files report st_size 0: the cap is on the bytes read, not on stat.
    assert os.stat("/proc/self/status").st_size == 0
    assert reason("file:///proc/self/status", (Path("/proc"),), max_bytes=10) == "oversized"


def test_fifo_and_directory_are_not_regular_files(root: Path) -> None:
    os.mkfifo(root / "t1" / "pipe")
    assert reason((root / "t1" / "pipe").as_uri(), (root,)) == "not_a_regular_file"  # and does not block
    assert reason((root / "t1").as_uri(), (root,)) == "not_a_regular_file"
    assert reason(root.as_uri(), (root,)) == "not_a_regular_file"


def test_missing_file_inside_root_is_unavailable(root: Path) -> None:
    assert reason((root / "t1" / "gone.txt").as_uri(), (root,)) == "content_unavailable"


def test_missing_file_outside_root_does_not_reveal_existence(root: Path) -> None:
    assert reason("file:///nonexistent/x", (root,)) == "uri_not_allowed"


def test_oversized_read_is_capped_never_whole(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = root / "t1" / "big.bin"
    with big.open("wb") as f:
        f.truncate(8 * 1024**3)  # sparse 8 GiB: reading it whole would not finish
    read = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        read.append(len(data))
        return data

    monkeypatch.setattr(content.os, "read", counting_read)
    assert reason(big.as_uri(), (root,), max_bytes=5 * 1024 * 1024) == "oversized"
    assert sum(read) == 5 * 1024 * 1024 + 1


def test_exactly_max_bytes_is_allowed(root: Path) -> None:
    (root / "t1" / "exact.txt").write_bytes(b"x" * MAX)
    assert len(read_file_uri((root / "t1" / "exact.txt").as_uri(), (root,), MAX)) == MAX
    (root / "t1" / "over.txt").write_bytes(b"x" * (MAX + 1))
    assert reason((root / "t1" / "over.txt").as_uri(), (root,)) == "oversized"


def test_no_roots_means_no_file_uris(root: Path) -> None:
    assert reason((root / "t1" / "doc.txt").as_uri(), ()) == "uri_not_allowed"
    assert reason((root / "t1" / "doc.txt").as_uri(), (root / "missing-root",)) == "uri_not_allowed"


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.com/doc.txt",
        "https://169.254.169.254/latest/meta-data",
        "s3://bucket/key",
        "ftp://host/x",
        "/etc/passwd",
        "",
        "file://otherhost/etc/passwd",
        "file:relative/path",
    ],
)
def test_non_file_or_non_local_uris_are_not_allowed(uri: str, root: Path) -> None:
    assert reason(uri, (root,)) == "uri_not_allowed"


def test_file_uri_path_and_confine_pure_parts(root: Path) -> None:
    assert file_uri_path("file:///a/b%20c") == Path("/a/b c")
    with pytest.raises(ContentRefError):
        file_uri_path("file:///a%00b")
    r, p = confine(root / "t1" / "doc.txt", (root,))
    assert (r, p) == (root.resolve(), (root / "t1" / "doc.txt").resolve())


def test_component_swapped_for_symlink_after_check_is_refused(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TOCTOU: the directory passes the check, then becomes a symlink outside; the open walk refuses it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "doc.txt").write_bytes(b"outside")
    real_confine = content.confine

    def confine_then_swap(path: Path, roots):
        result = real_confine(path, roots)
        (root / "t1" / "doc.txt").unlink()
        (root / "t1").rmdir()
        (root / "t1").symlink_to(outside)
        return result

    monkeypatch.setattr(content, "confine", confine_then_swap)
    with pytest.raises(ContentRefError) as exc:
        read_file_uri((root / "t1" / "doc.txt").as_uri(), (root,), MAX)
    assert exc.value.reason == "content_unavailable"


# -- the normalizer's load_content: PermanentError with the same reasons (the worker dead-letters it) --


def test_load_content_inline_needs_no_roots() -> None:
    assert load_content(event(content=b"inline"), MAX) == b"inline"


def test_load_content_maps_refusals_to_permanent_errors(root: Path) -> None:
    with pytest.raises(PermanentError) as exc:
        load_content(event("file:///etc/passwd"), MAX, (root,))
    assert exc.value.reason == "uri_not_allowed"
    with pytest.raises(PermanentError) as exc:
        load_content(event((root / "t1" / "doc.txt").as_uri()), MAX)  # default: no roots
    assert exc.value.reason == "uri_not_allowed"
    assert load_content(event((root / "t1" / "doc.txt").as_uri()), MAX, (root,)) == b"inside the root"


async def test_handler_uses_settings_content_roots(root: Path) -> None:
    from types import SimpleNamespace

    from ragstream.runtime.worker import Inbound

    s = Settings()
    s = s.model_copy(update={"ingest": s.ingest.model_copy(update={"content_roots": (root,)})})
    handle = normalizer.build_handler(Deps(s))

    def inbound(ev: DocumentChanged) -> Inbound:
        return Inbound(record=SimpleNamespace(partition=0), event=ev, span=None, context=None)  # type: ignore[arg-type]

    out = await handle([inbound(event((root / "t1" / "doc.txt").as_uri()))])
    assert out[0].event.sections[0].text == "inside the root"
    with pytest.raises(PermanentError) as exc:
        await handle([inbound(event("file:///etc/passwd"))])
    assert exc.value.reason == "uri_not_allowed"


# -- metrics labels: a closed set --


def test_format_label_is_a_closed_set() -> None:
    for fmt in SUPPORTED:
        assert format_label(fmt) == fmt
        assert format_label(fmt.upper() + "; charset=utf-8") == fmt
    assert format_label("text/x-markdown") == "text/markdown"
    labels = {format_label(f"application/x-junk-{i}") for i in range(500)}
    assert labels == {"other"}
    assert format_label("") == "other"
    assert format_label("text/html\nevil") == "other"


def test_normalized_metric_never_takes_the_raw_mime_type() -> None:
    from ragstream.runtime import metrics

    def series() -> set[str]:
        return {
            s.labels["format"]
            for m in metrics.NORMALIZED.collect()
            for s in m.samples
            if s.name.endswith("_total")
        }

    for i in range(20):
        with pytest.raises(PermanentError):
            to_normalized(event(content=b"x", mime=f"application/x-junk-{i}"), b"x", MAX)
    to_normalized(event(content=b"hello", mime="TEXT/PLAIN; charset=utf-8"), b"hello", MAX)
    assert series() <= {*SUPPORTED, "other"}


# -- the folder publisher's staging of large files --


def settings_with_roots(*roots: Path) -> Settings:
    s = Settings()
    return s.model_copy(update={"ingest": s.ingest.model_copy(update={"content_roots": roots})})


def test_stage_content_copies_into_first_root_atomically(root: Path, tmp_path: Path) -> None:
    src = tmp_path / "user" / "big.txt"
    src.parent.mkdir()
    data = b"big words " * 1000
    src.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    other = tmp_path / "second-root"
    uri = stage_content(settings_with_roots(root, other), "acme", src, sha)
    dest = root.resolve() / "acme" / sha
    assert uri == dest.as_uri()
    assert dest.read_bytes() == data
    assert not other.exists()
    assert [p.name for p in dest.parent.iterdir()] == [sha], "no temp file left"
    # published URI is readable by the normalizer under the same roots
    assert read_file_uri(uri, (root,), len(data)) == data
    # present: skipped (not rewritten)
    mtime = dest.stat().st_mtime_ns
    assert stage_content(settings_with_roots(root), "acme", src, sha) == uri
    assert dest.stat().st_mtime_ns == mtime


def test_stage_content_without_roots_is_a_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "big.txt"
    src.write_bytes(b"x")
    with pytest.raises(StagingError, match=f"file over {INLINE_CONTENT_MAX_BYTES} bytes needs"):
        stage_content(settings_with_roots(), "acme", src, hashlib.sha256(b"x").hexdigest())


def test_stage_content_refuses_bad_tenant_and_changed_file(root: Path, tmp_path: Path) -> None:
    src = tmp_path / "big.txt"
    src.write_bytes(b"x")
    sha = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(StagingError):
        stage_content(settings_with_roots(root), "../evil", src, sha)
    with pytest.raises(StagingError):
        stage_content(settings_with_roots(root), "acme", src, "../" + sha[3:])
    with pytest.raises(StagingError, match="changed"):
        stage_content(settings_with_roots(root), "acme", src, hashlib.sha256(b"y").hexdigest())
    assert list((root / "acme").iterdir()) == [], "the partial copy is removed"
