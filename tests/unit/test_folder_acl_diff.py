"""The folder diff sees ACL changes: an ACL-only change is an AclChanged, never "unchanged"."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from producers.folder import Manifest, diff, load_manifest, manifest_path, save_manifest
from ragstream.adapters.embedder import HashEmbedder
from ragstream.adapters.memory_store import MemoryChunkStore
from ragstream.indexing.indexer import Indexer, apply_batch
from ragstream.ports import DocumentState
from schemas.ingestion import Acl, ChunkPayload, DocumentChunked, DocumentFacts, DocumentIndexed

STAFF = Acl(groups=("staff",))
FINANCE = Acl(groups=("finance",))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.md").write_text("# A\n\nalpha\n")
    (d / "b.md").write_text("# B\n\nbeta\n")
    return d


def _published(folder: Path, acl: Acl) -> Manifest:
    _, current = diff(folder, Manifest(), acl)
    return current


def test_first_publish_everything_new_and_acl_recorded(folder: Path) -> None:
    d, current = diff(folder, Manifest(), STAFF)
    assert [e.rel for e in d.new] == ["a.md", "b.md"] and d.total == 2
    assert current.acls == {"a.md": STAFF, "b.md": STAFF}


def test_unchanged_content_and_acl_sends_nothing(folder: Path) -> None:
    d, _ = diff(folder, _published(folder, STAFF), STAFF)
    assert (d.new, d.changed, d.acl_changed, d.removed, d.unchanged, d.total) == ([], [], [], [], 2, 0)


def test_acl_only_change_is_detected(folder: Path) -> None:
    d, current = diff(folder, _published(folder, STAFF), FINANCE)
    assert [e.rel for e in d.acl_changed] == ["a.md", "b.md"]
    assert (d.new, d.changed, d.removed, d.unchanged, d.total) == ([], [], [], 0, 2)
    assert current.acls == {"a.md": FINANCE, "b.md": FINANCE}


def test_acl_order_and_duplicates_do_not_count_as_a_change(folder: Path) -> None:
    before = _published(folder, Acl(groups=("staff", "finance")))
    d, _ = diff(folder, before, Acl(groups=("finance", "staff", "staff")))
    assert d.total == 0 and d.unchanged == 2


def test_principal_change_is_an_acl_change(folder: Path) -> None:
    d, _ = diff(folder, _published(folder, STAFF), Acl(groups=("staff",), principals=("bob",)))
    assert len(d.acl_changed) == 2


def test_content_and_acl_change_is_a_normal_change(folder: Path) -> None:
    before = _published(folder, STAFF)
    (folder / "a.md").write_text("# A\n\nalpha, edited\n")
    d, current = diff(folder, before, FINANCE)
    assert [e.rel for e in d.changed] == ["a.md"]  # the upsert carries the new ACL
    assert [e.rel for e in d.acl_changed] == ["b.md"]
    assert current.acls["a.md"] == FINANCE


def test_removed_file_drops_its_acl(folder: Path) -> None:
    before = _published(folder, STAFF)
    (folder / "b.md").unlink()
    d, current = diff(folder, before, STAFF)
    assert d.removed == ["b.md"] and "b.md" not in current.acls and "b.md" not in current.files


def test_manifest_round_trip(folder: Path, tmp_path: Path) -> None:
    path = manifest_path(tmp_path / "state", "t1", folder)
    save_manifest(path, folder, _published(folder, Acl(groups=("staff", "finance"), principals=("bob",))))
    loaded = load_manifest(path)
    assert loaded.acls["a.md"] == Acl(groups=("finance", "staff"), principals=("bob",))
    d, _ = diff(folder, loaded, Acl(groups=("staff", "finance"), principals=("bob",)))
    assert d.total == 0


def test_old_manifest_without_acls_republishes_not_unchanged(folder: Path, tmp_path: Path) -> None:
    """A manifest from before ACLs were recorded: the ACL is unknown, so the safe choice is an upsert
    with the current ACL (the embedder sees the same content and rewrites the ACL only)."""
    path = manifest_path(tmp_path / "state", "t1", folder)
    path.parent.mkdir(parents=True)
    files = {e: s for e, s in _published(folder, STAFF).files.items()}
    path.write_text(json.dumps({"root": str(folder.resolve()), "files": files}))
    loaded = load_manifest(path)
    assert loaded.files == files and loaded.acls == {}
    d, current = diff(folder, loaded, FINANCE)
    assert [e.rel for e in d.changed] == ["a.md", "b.md"] and d.unchanged == 0 and not d.acl_changed
    save_manifest(path, folder, current)  # the next publish knows the ACL again
    d2, _ = diff(folder, load_manifest(path), FINANCE)
    assert d2.total == 0


def test_partly_unreadable_acls_are_unknown(folder: Path, tmp_path: Path) -> None:
    path = manifest_path(tmp_path / "state", "t1", folder)
    save_manifest(path, folder, _published(folder, STAFF))
    body = json.loads(path.read_text())
    body["acls"]["a.md"] = {"groups": "not-a-list", "bogus": 1}
    path.write_text(json.dumps(body))
    loaded = load_manifest(path)
    assert "a.md" not in loaded.acls and loaded.acls["b.md"] == STAFF
    d, _ = diff(folder, loaded, STAFF)
    assert [e.rel for e in d.changed] == ["a.md"] and d.unchanged == 1


def test_missing_or_corrupt_manifest_is_empty(tmp_path: Path) -> None:
    assert load_manifest(tmp_path / "nope.json") == Manifest()
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    assert load_manifest(bad) == Manifest()


# The SDK's re-publish path: the same content upserted again with another ACL must rewrite the ACL
# (the embedder's unchanged-content dedupe must not swallow it).


class CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(16)
        self.texts = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += len(texts)
        return super().embed(texts)


def _chunked(acl: Acl, sha: str = "sha-1") -> DocumentChunked:
    return DocumentChunked(
        tenant_id="t1",
        producer="test",
        facts=DocumentFacts(document_id="doc.md", source_version=sha, acl=acl, content_sha256=sha),
        normalizer_version="n1",
        policy_hash="p1",
        chunks=(
            ChunkPayload(
                chunk_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{sha}:0")),
                position=0,
                text="merger code",
                token_count=2,
            ),
        ),
    )


def test_same_content_upsert_with_new_acl_rewrites_acl_without_embedding() -> None:
    store, emb = MemoryChunkStore(), CountingEmbedder()
    indexer = Indexer(store, emb, "g1")
    apply_batch(indexer, [_chunked(STAFF)])
    assert emb.texts == 1
    (receipt,) = apply_batch(indexer, [_chunked(FINANCE)])
    assert isinstance(receipt, DocumentIndexed)
    assert receipt.acl_only and not receipt.unchanged and emb.texts == 1, "no re-embedding"
    state = store.get_state("t1", "doc.md")
    assert isinstance(state, DocumentState) and state.acl_groups == ("finance",)
    assert {tuple(c["acl_groups"]) for c in store.iter_chunks("t1")} == {("finance",)}
    (again,) = apply_batch(indexer, [_chunked(FINANCE)])
    assert isinstance(again, DocumentIndexed) and again.unchanged and not again.acl_only


def test_same_content_upserts_with_two_acls_in_one_batch_end_with_the_last() -> None:
    store, emb = MemoryChunkStore(), CountingEmbedder()
    indexer = Indexer(store, emb, "g1")
    apply_batch(indexer, [_chunked(STAFF), _chunked(FINANCE)])
    assert store.get_state("t1", "doc.md").acl_groups == ("finance",)  # type: ignore[union-attr]
    assert {tuple(c["acl_groups"]) for c in store.iter_chunks("t1")} == {("finance",)}
