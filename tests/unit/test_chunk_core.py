"""The chunker: token budgets in the model's tokenizer, sections respected, deterministic ids."""

from __future__ import annotations

import glob
import itertools

import pytest

from ragstream.adapters.tokenizer import HFTokenizer
from ragstream.core.chunk import ChunkingPolicy, chunk, chunk_id_for
from ragstream.core.normalize import NormalizedDocument, Section, normalize
from ragstream.core.tokenizer import WhitespaceTokenizer

pytestmark = pytest.mark.unit
WS = WhitespaceTokenizer()


def _doc(*sections: tuple[tuple[str, ...], str]) -> NormalizedDocument:
    return NormalizedDocument(
        title="T",
        mime_type="text/plain",
        sections=tuple(Section(heading_path=h, text=t) for h, t in sections),
    )


def _words(n: int, start: int = 0) -> str:
    return " ".join(f"w{i}." if i % 10 == 9 else f"w{i}" for i in range(start, start + n))


def _run(doc: NormalizedDocument, policy: ChunkingPolicy, **kw: str):
    args = {"tenant_id": "t", "document_id": "d", "source_version": "v1", **kw}
    return chunk(doc, policy, WS, **args)


def test_sizes_and_overlap() -> None:
    policy = ChunkingPolicy(max_tokens=20, overlap_tokens=5, min_chunk_tokens=0)
    chunks = _run(_doc(((), _words(100))), policy)
    assert all(c.token_count <= 20 for c in chunks)
    for a, b in itertools.pairwise(chunks):
        assert set(a.text.split()) & set(b.text.split()), "neighbours overlap"
    covered = set(" ".join(c.text for c in chunks).split())
    assert covered == set(_words(100).split()), "no text lost"


def test_prefers_sentence_ends() -> None:
    chunks = _run(_doc(((), _words(60))), ChunkingPolicy(max_tokens=16, overlap_tokens=0, min_chunk_tokens=0))
    assert all(c.text.endswith(".") for c in chunks[:-1])


def test_sections_not_crossed_and_heading_kept() -> None:
    doc = _doc((("A",), _words(30)), (("A", "B"), _words(30, 100)))
    chunks = _run(doc, ChunkingPolicy(max_tokens=50, overlap_tokens=0, min_chunk_tokens=0))
    assert [c.heading_path for c in chunks] == [("A",), ("A", "B")]


def test_tiny_sections_merged_under_same_parent() -> None:
    doc = _doc((("A",), "short one."), (("A", "x"), "short two."), (("Z",), "other top."))
    chunks = _run(doc, ChunkingPolicy(max_tokens=50, overlap_tokens=0, min_chunk_tokens=10))
    assert len(chunks) == 2 and "short two" in chunks[0].text


def test_ids_deterministic_and_scoped() -> None:
    doc, policy = _doc(((), _words(50))), ChunkingPolicy(max_tokens=20, overlap_tokens=0)
    a, b = _run(doc, policy), _run(doc, policy)
    assert [c.chunk_id for c in a] == [c.chunk_id for c in b]
    other = {c.chunk_id for c in _run(doc, policy, source_version="v2")}
    assert other.isdisjoint(c.chunk_id for c in a)
    assert {c.chunk_id for c in _run(doc, policy, tenant_id="u")}.isdisjoint(c.chunk_id for c in a)
    changed = ChunkingPolicy(max_tokens=21, overlap_tokens=0)
    assert changed.policy_hash != policy.policy_hash
    assert a[0].chunk_id == chunk_id_for("t", "d", "v1", policy.policy_hash, 0)


def test_degraded_policy_keeps_little() -> None:
    doc = _doc(((), _words(300)))
    full = _run(doc, ChunkingPolicy(max_tokens=50))
    bad = _run(doc, ChunkingPolicy(max_tokens=16, max_chunks_per_document=1))
    assert len(bad) == 1 and sum(c.token_count for c in bad) < sum(c.token_count for c in full) / 10


def test_real_tokenizer_budget_on_debian_docs() -> None:
    files = sorted(glob.glob("/usr/share/doc/debian/FAQ/*.en.html"))[:6]
    if not files:
        pytest.skip("debian-faq is not installed (scripts/bootstrap.sh installs it)")
    tok, policy = HFTokenizer(), ChunkingPolicy()
    for f in files:
        doc = normalize(open(f, "rb").read(), "text/html")  # noqa: SIM115
        chunks = chunk(doc, policy, tok, tenant_id="t", document_id=f, source_version="v")
        assert chunks and all(tok.count(c.text) <= policy.max_tokens for c in chunks)
        assert all(c.text in doc.text for c in chunks)
