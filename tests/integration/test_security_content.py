"""Content references on the real broker and Weaviate: file:// outside the content roots is dead-lettered.

Raw DocumentChanged events (what any publisher can send) name /etc/passwd, /dev/zero, a `..` escape and a
symlink out of the root; the real normalizer dead-letters each with its reason, and a good document
published after them on the same partition is still indexed.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

import producers.folder_publish
from producers.publisher import DocumentPublisher
from schemas.dlq import DeadLetter
from schemas.ingestion import Acl
from schemas.topics import SOURCE_CHANGES
from tests.support.kafka import read_all
from tests.support.pipeline import Harness, eventually, isolated_pipeline_settings

pytestmark = pytest.mark.integration
INGEST = ("normalizer", "chunker", "embedder")


def with_roots(settings, unique: str, root: Path, **ingest: object):
    return isolated_pipeline_settings(
        settings,
        unique,
        ingest=settings.ingest.model_copy(update={"content_roots": (root,), **ingest}),
    )


async def test_file_refs_outside_roots_are_dead_lettered_and_partition_moves_on(
    settings, unique, embedder, tmp_path
) -> None:
    root = tmp_path / "content"
    (root / "t1").mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("Outside secret: the vault code is 4242.\n")
    (root / "t1" / "to-passwd").symlink_to("/etc/passwd")
    (root / "t1" / "big.txt").write_bytes(b"word " * 1000)
    (root / "t1" / "good.md").write_text("# Inside\n\nThe inside document names the harbour crane.\n")
    s = with_roots(settings, unique, root, max_document_bytes=4000)
    acl = Acl(groups=("everyone",))
    attacks = {
        "passwd": ("file:///etc/passwd", "uri_not_allowed"),
        "zero": ("file:///dev/zero", "uri_not_allowed"),
        "proc": ("file:///proc/self/status", "uri_not_allowed"),
        "dotdot": (f"file://{root}/t1/../../outside.txt", "uri_not_allowed"),
        "symlink": ((root / "t1" / "to-passwd").as_uri(), "uri_not_allowed"),
        "http": ("http://169.254.169.254/latest/meta-data", "uri_not_allowed"),
        "missing": ((root / "t1" / "gone.txt").as_uri(), "content_unavailable"),
        "big": ((root / "t1" / "big.txt").as_uri(), "oversized"),
    }
    async with Harness(s, embedder, INGEST, tmp=tmp_path) as h, DocumentPublisher(s) as pub:
        for doc, (uri, _) in attacks.items():
            await pub.upsert("t1", doc, content_uri=uri, mime_type="text/plain", acl=acl)
        # Same tenant, same key space: a good file reference and an inline document after the attacks.
        good_uri = (root / "t1" / "good.md").as_uri()
        await pub.upsert("t1", "good.md", content_uri=good_uri, mime_type="text/markdown", acl=acl)
        await pub.upsert("t1", "after.md", content=b"# After\n\nIndexed after the attacks.", acl=acl)
        await eventually(lambda: h.store.has_tenant("t1") and h.store.get_state("t1", "after.md"))
        await eventually(lambda: h.store.get_state("t1", "good.md"))
        dead = [
            DeadLetter.model_validate_json(r.value)
            for r in await read_all(s.kafka, SOURCE_CHANGES.dlq, expect=len(attacks))
        ]
        by_doc = {base64.b64decode(d.original_key_b64 or "").decode().split("/", 1)[1]: d for d in dead}
        assert {doc: d.reason for doc, d in by_doc.items()} == {doc: r for doc, (_, r) in attacks.items()}
        assert all(d.stage == "normalizer" and d.tenant_id == "t1" for d in dead)
        for doc in attacks:
            assert h.store.get_state("t1", doc) is None, f"{doc} was indexed"
        for d in dead:
            assert "root:" not in d.message and "4242" not in d.message, "content leaked into the DLQ"
        texts = [str(c.get("text", "")) for c in h.store.iter_chunks("t1")]
        assert any("harbour crane" in t for t in texts)
        assert not any("root:" in t or "4242" in t for t in texts)


async def test_folder_publish_stages_large_files_into_the_content_root(
    settings, unique, embedder, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file over the inline cap is copied to <root>/<tenant>/<sha256> and that URI is what is published."""
    monkeypatch.setattr(producers.folder_publish, "INLINE_CONTENT_MAX_BYTES", 64)
    root = tmp_path / "content"
    folder = tmp_path / "docs"
    folder.mkdir()
    body = "The staged document mentions the lighthouse keeper. " * 4
    (folder / "large.md").write_text("# Large\n\n" + body)
    (folder / "small.txt").write_text("tiny inline")
    s = with_roots(settings, unique, root)
    async with Harness(s, embedder, INGEST, tmp=tmp_path) as h:
        result = await h.publish(folder, "t1", timeout_s=120)
        assert result["searchable"] == 2
        staged = list((root / "t1").iterdir())
        assert len(staged) == 1 and len(staged[0].name) == 64
        assert staged[0].read_bytes() == (folder / "large.md").read_bytes()
        assert h.store.get_state("t1", "large.md")
