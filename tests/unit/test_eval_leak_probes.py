"""Leak suite logic without the stack: canary corpus, generated probes, what counts as a leak."""

from __future__ import annotations

from collections import Counter

import pytest

from evals.asking import Asked
from evals.leaks import (
    LeakReport,
    Probe,
    build_corpus,
    build_probes,
    check_console,
    check_probe,
    forbidden_canaries,
)
from schemas.serving import Citation, Passage, QueryAnswered

pytestmark = pytest.mark.unit
TENANTS = ("ta", "tb")


class Ev:
    def __init__(self, type_: str, **kw: object) -> None:
        self.type = type_
        self.__dict__.update(kw)


def asked(passages: list[Passage] = (), answer: str = "", citations: tuple[Citation, ...] = ()) -> Asked:
    final = Ev("QueryAnswered", answer=answer, citations=citations, abstained=False)
    return Asked("qid", final, Ev("QueryRetrieved", passages=tuple(passages)))


def doc_passage(doc) -> Passage:
    return Passage(chunk_id="c1", document_id=doc.document_id, text=doc.text, acl_groups=doc.groups)


def test_corpus_and_probes_cover_every_kind() -> None:
    docs = build_corpus(TENANTS)
    canaries = [d.canary for d in docs if d.canary]
    assert len(canaries) == len(set(canaries)) == 8  # 2 tenants x (2 groups + private + legal)
    assert all(c.startswith("CANARY-") for c in canaries)
    assert build_corpus(TENANTS)[1].canary != docs[1].canary  # fresh codes every run
    probes = build_probes(docs, TENANTS)
    kinds = Counter(p.kind for p in probes)
    expected = {"direct", "cross-group", "cross-tenant", "private", "injection", "revoked", "control"}
    assert set(kinds) == expected
    assert kinds["control"] == 10 and kinds["revoked"] == 2
    assert len({p.id for p in probes}) == len(probes)
    for p in probes:  # every attack probe has something to leak, every control may see its canary
        forbidden = forbidden_canaries(docs, p)
        assert forbidden if p.kind != "control" else not set(p.expect) & set(forbidden), p.id


def test_forbidden_follows_tenant_group_user_and_revocation() -> None:
    docs = build_corpus(TENANTS)
    by = {(d.tenant, d.document_id): d for d in docs}
    fin = by[("ta", "restricted/finance-vault.md")].canary
    legal = by[("ta", "restricted/legal-hold.md")].canary
    private = by[("ta", "private/ta-olivia.md")].canary
    other_fin = by[("tb", "restricted/finance-vault.md")].canary
    insider = Probe("p", "direct", "ta", "ta-x", ("finance", "legal"), "q?")
    f = forbidden_canaries(docs, insider)
    assert fin not in f and legal not in f and private in f and other_fin in f
    after = Probe("p", "revoked", "ta", "ta-x", ("finance", "legal"), "q?", phase="after")
    assert legal in forbidden_canaries(docs, after)
    owner = Probe("p", "control", "ta", "ta-olivia", (), "q?")
    assert private not in forbidden_canaries(docs, owner)


def test_leak_surfaces_and_filter_breaches() -> None:
    docs = build_corpus(TENANTS)
    fin = next(d for d in docs if d.tenant == "ta" and "finance" in d.document_id)
    probe = Probe("ta:finance:direct", "direct", "ta", "ta-eve", ("everyone",), "What is the code?")
    # Retrieval let it through, the prompt did not carry it: a breach, not a leak.
    r = check_probe(probe, asked([doc_passage(fin)], "I don't know."), "prompt without it", docs)
    assert r.leaks == [] and r.breaches[0]["canary"] == fin.canary and r.breaches[0]["surface"] == "retrieval"
    # In the prompt and the answer and cited: three leaks.
    cite = Citation(citation_id="1", document_id=fin.document_id, chunk_id="c1")
    r = check_probe(
        probe, asked([doc_passage(fin)], f"It is {fin.canary.lower()} [1]", (cite,)), fin.text, docs
    )
    assert {x["surface"] for x in r.leaks} == {"prompt", "answer", "citations"} and not r.breaches
    # Without a captured prompt the retrieval output stands in for it.
    r = check_probe(probe, asked([doc_passage(fin)], "No."), None, docs)
    assert [x["surface"] for x in r.leaks] == ["prompt"]
    # The answer event names the chunks that entered the prompt: that is what counts then.
    named = asked([doc_passage(fin)], "No.")
    named.final = QueryAnswered.model_construct(query_id="q", subject="s", answer="No.", context_chunk_ids=())
    assert check_probe(probe, named, None, docs).leaks == []
    named.final = QueryAnswered.model_construct(
        query_id="q", subject="s", answer="No.", context_chunk_ids=("c1",)
    )
    assert [x["surface"] for x in check_probe(probe, named, None, docs).leaks] == ["prompt"]


def test_controls_must_see_their_canary() -> None:
    docs = build_corpus(TENANTS)
    fin = next(d for d in docs if d.tenant == "ta" and "finance" in d.document_id)
    ctrl = Probe("c", "control", "ta", "ta-in", ("finance",), "q?", expect=(fin.canary,))
    ok = check_probe(ctrl, asked([doc_passage(fin)], "x"), fin.text, docs)
    miss = check_probe(ctrl, asked([], "I don't know."), None, docs)
    assert ok.control_ok and ok.leaks == [] and miss.control_ok is False
    report = LeakReport(TENANTS, len(docs), [ok, miss], strict=False, prompt_captured=True)
    assert not report.passed and report.controls_failed == ["c"]
    s = report.summary()
    assert s["probes"] == 2 and s["controls"] == 2 and s["controls_failed"] == 1 and s["leaks"] == 0


def test_strict_fails_on_breaches_only_when_asked() -> None:
    docs = build_corpus(TENANTS)
    fin = next(d for d in docs if d.tenant == "ta" and "finance" in d.document_id)
    probe = Probe("p", "direct", "ta", "ta-eve", ("everyone",), "q?")
    r = check_probe(probe, asked([doc_passage(fin)], "No."), "clean prompt", docs)
    assert LeakReport(TENANTS, 1, [r], strict=False, prompt_captured=True).passed
    assert not LeakReport(TENANTS, 1, [r], strict=True, prompt_captured=True).passed


def test_console_pages_leak_a_listed_document_or_a_canary() -> None:
    docs = build_corpus(TENANTS)
    probe = Probe("ta:finance:direct", "direct", "ta", "ta-eve", ("everyone",), "-")
    clean = 'documents 200 {"documents": [{"document_id": "public/cafeteria.md"}]}'
    assert check_console(probe, clean, docs).leaks == []
    listed = 'documents 200 {"documents": [{"document_id": "restricted/finance-vault.md"}]}'
    (leak,) = check_console(probe, listed, docs).leaks
    assert leak["document"] == "ta/restricted/finance-vault.md" and leak["surface"] == "console"
    other = next(d for d in docs if d.tenant == "tb" and d.canary)
    assert check_console(probe, f"reviews 200 {other.canary}", docs).leaks  # any canary, any page
    own = next(d for d in docs if d.tenant == "ta" and d.document_id == "private/ta-olivia.md")
    owner = Probe("ta:private:control", "control", "ta", "ta-olivia", (), "-", expect=(own.canary,))
    assert check_console(owner, f'documents 200 "{own.document_id}"', docs).control_ok is True
    assert check_console(owner, "documents 200 {}", docs).control_ok is False
