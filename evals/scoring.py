"""Scoring one answered question and aggregating a run: pure functions over events and store lookups.

Retrieval comes first (recall@k, MRR@10, nDCG@10, empty results), then answer quality (groundedness,
citations, expected facts, abstention), authorization (unauthorized documents on every surface the caller
sees), latency by request class and stage, and token counts. The store is read through `StoreView`, so
unit tests pass a fake.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from evals.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from evals.questions import Question, Threshold
from ragstream.core.acl import may_read, passage_allowed
from ragstream.core.groundedness import GroundednessScorer
from ragstream.core.stats import LATENCY_QUANTILES, percentile
from schemas.serving import Caller

RECALL_KS = (1, 5, 10)
# The one threshold no configuration can relax.
# Always enforced: no unauthorized document anywhere, and no failed query (a failure is never a score).
BUILTIN_THRESHOLDS: dict[str, Threshold] = {
    "unauthorized_document_rate": Threshold(max=0.0),
    "error_rate": Threshold(max=0.0),
}
_MARKER = re.compile(r"\[(\d{1,3})\]")
_MARKER_WS = re.compile(r"\s*\[\d{1,3}\]")
# A sentence: up to its end mark (a dot inside a number does not end it), plus the markers that follow.
_SENTENCE = re.compile(r"(?:[^.!?]|\.(?=\d))+(?:[.!?]+|$)(?:\s*\[\d{1,3}\])*")
_CODE = re.compile(r"\b[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*\d[A-Za-z0-9_-]*\b|\b[A-Za-z]+\d[A-Za-z0-9]*\b")
_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")


class StoreView(Protocol):
    """What scoring needs from the index (one tenant at a time)."""

    def acl_of(self, tenant: str, document_ids: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
        """document id -> (principals, groups) of its live version; absent when not indexed."""
        ...

    def chunk_texts(self, tenant: str, chunk_ids: Sequence[str]) -> dict[str, str]:
        """chunk id -> text, for the chunks that exist."""
        ...

    def document_texts(self, tenant: str, document_id: str) -> list[str]:
        """The live chunks' texts of one document."""
        ...


def dedup(xs: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in xs if not (x in seen or seen.add(x))]


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def words(text: str) -> list[str]:
    return [w.replace(",", "") for w in _WORD.findall(_fold(text))]


def fact_found(fact: str, answer: str) -> bool:
    """Every word of the fact appears in the answer (case, accents, punctuation and order ignored)."""
    need = set(words(fact))
    return bool(need) and need <= set(words(answer))


def strip_markers(text: str) -> str:
    return re.sub(r"\s+", " ", _MARKER_WS.sub("", text)).strip()


def statements_by_citation(answer: str) -> dict[str, list[str]]:
    """citation id -> the answer sentences that carry its marker (markers right after a sentence's end,
    as in `... closes at three. [2]`, belong to that sentence)."""
    out: dict[str, list[str]] = defaultdict(list)
    for m in _SENTENCE.finditer(answer):
        piece = m.group(0)
        text = strip_markers(piece)
        if not text:
            continue
        for cid in dict.fromkeys(_MARKER.findall(piece)):
            if text not in out[cid]:
                out[cid].append(text)
    return dict(out)


@dataclass(frozen=True)
class Observed:
    """The pipeline's side of one question (from `evals.asking.Asked`, flattened for scoring)."""

    query_id: str
    passages: tuple[Any, ...]  # schemas.serving.Passage, retrieval order
    answer: str | None  # None when the query failed or timed out
    abstained: bool
    citations: tuple[Any, ...]  # schemas.serving.Citation
    prompt: str | None  # the captured prompt; None when not captured (or the model was not called)
    prompt_captured: (
        bool  # whether `prompt` is the captured text of this query (else context ids or retrieval)
    )
    latency_ms: float
    timings_ms: Mapping[str, float]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    # Chunk ids that entered the prompt, when the answer event carries them (no capture needed).
    context_chunk_ids: tuple[str, ...] | None = None
    # The passages the rerank stage hands generation (the served ranking); None: retrieval order.
    served_passages: tuple[Any, ...] | None = None


def score_question(q: Question, obs: Observed, view: StoreView, scorer: GroundednessScorer) -> dict[str, Any]:
    """One question's record: retrieval, answer quality, authorization, latency, tokens."""
    caller = Caller(subject=q.user, groups=q.groups)
    passages = list(obs.passages)
    # Ranking metrics score what a caller is served (after rerank), as the citations would name it;
    # the authorization checks below keep the wider retrieval set.
    served = list(obs.served_passages) if obs.served_passages is not None else passages
    ranked = dedup(p.document_id for p in served)
    rec: dict[str, Any] = {
        "id": q.id,
        "question": q.question,
        "tenant": q.tenant,
        "user": q.user,
        "groups": list(q.groups),
        "request_class": q.request_class,
        "tags": list(q.tags),
        "query_id": obs.query_id,
        "error": obs.error,
        "latency_ms": round(obs.latency_ms, 2),
        "timings_ms": {k: round(v, 2) for k, v in obs.timings_ms.items()},
        "retrieved_docs": ranked[:20],
        "passages": len(passages),
        "empty": not passages,
        "answer": obs.answer,
        "abstained": obs.abstained,
        "citations": [{"id": c.citation_id, "document_id": c.document_id} for c in obs.citations],
        "prompt_tokens": obs.prompt_tokens,
        "completion_tokens": obs.completion_tokens,
        "judged": q.judged,
    }
    # --- retrieval ---------------------------------------------------------------------------------
    if q.judged:
        rels = q.expected_docs
        for k in RECALL_KS:
            rec[f"recall_at_{k}"] = recall_at_k(ranked, rels, k)
        rec["mrr_at_10"] = mrr_at_k(ranked, rels, 10)
        rec["ndcg_at_10"] = ndcg_at_k(ranked, rels, 10)
        rec["hit"] = any(rels.get(d, 0) > 0 for d in ranked[: q.top_k])
    if q.expected_chunks:
        top = passages[:10]
        found = [
            any(
                p.document_id == ref.document
                and (
                    (ref.chunk_id is not None and p.chunk_id == ref.chunk_id)
                    or (ref.contains is not None and _norm(ref.contains) in _norm(p.text))
                )
                for p in top
            )
            for ref in q.expected_chunks
        ]
        rec["chunk_recall_at_10"] = sum(found) / len(found)
    # --- authorization -----------------------------------------------------------------------------
    cited_docs = [c.document_id for c in obs.citations]
    acl = view.acl_of(q.tenant, dedup([*ranked, *cited_docs]))

    def readable(doc: str) -> bool:
        st = acl.get(doc)
        return st is not None and may_read(st[0], st[1], caller)

    retrieval_bad = dedup(
        p.document_id for p in passages if not passage_allowed(p, caller) or not readable(p.document_id)
    )
    exposures: dict[str, list[str]] = {}
    cited_bad = dedup(d for d in cited_docs if not readable(d))
    if cited_bad:
        exposures["citations"] = cited_bad
    texts = {d: [t.strip() for t in view.document_texts(q.tenant, d) if t.strip()] for d in retrieval_bad}
    context = set(obs.context_chunk_ids) if obs.context_chunk_ids is not None else None
    if not obs.prompt_captured:
        if context is not None:
            bad = set(retrieval_bad)
            in_ctx = dedup(p.document_id for p in passages if p.document_id in bad and p.chunk_id in context)
            if in_ctx:
                exposures["prompt"] = in_ctx
        elif retrieval_bad:
            # Without the prompt, what retrieval handed on is the conservative stand-in (prompt ⊆ retrieved).
            exposures["prompt"] = retrieval_bad
    elif obs.prompt:
        in_prompt = [d for d in retrieval_bad if any(t in obs.prompt for t in texts[d])]
        if in_prompt:
            exposures["prompt"] = in_prompt
    if obs.answer:
        in_answer = [d for d in retrieval_bad if any(_leaks_into(t, obs.answer) for t in texts[d])]
        if in_answer:
            exposures["answer"] = in_answer
    rec["unauthorized_retrieved"] = retrieval_bad
    rec["exposures"] = exposures
    rec["unauthorized"] = bool(exposures)
    rec["never_cite_violation"] = any(d in q.must_never_cite for d in cited_docs)
    # --- answer quality ------------------------------------------------------------------------------
    answered = obs.answer is not None and obs.error is None
    rec["answered"] = answered and not obs.abstained
    expect = q.expect_abstain if q.expect_abstain else (False if q.judged or q.expected_facts else None)
    rec["expect_abstain"] = expect
    if expect is not None:
        rec["abstention_correct"] = answered and obs.abstained == expect
    if q.expected_facts:
        text = obs.answer or ""
        found_facts = [f for f in q.expected_facts if answered and fact_found(f, text)]
        rec["facts_found"] = found_facts
        rec["fact_recall"] = len(found_facts) / len(q.expected_facts)
    if rec["answered"]:
        cited_ids = [c.chunk_id for c in obs.citations]
        chunk_text = view.chunk_texts(q.tenant, cited_ids) if cited_ids else {}
        support_passages = [chunk_text[c] for c in cited_ids if c in chunk_text] or [
            p.text for p in passages[: q.top_k]
        ]
        g = scorer.score(strip_markers(obs.answer or ""), support_passages, question=q.question)
        rec["groundedness"] = g.supported_share
        rec["grounded"] = g.grounded
        retrieved_ids = {p.chunk_id for p in passages}
        by_cid = statements_by_citation(obs.answer or "")
        checks = []
        for c in obs.citations:
            text = chunk_text.get(c.chunk_id)
            exists = text is not None
            if obs.prompt_captured:
                in_prompt = exists and obs.prompt is not None and text.strip() in obs.prompt
            elif context is not None:
                in_prompt = c.chunk_id in context
            else:
                in_prompt = c.chunk_id in retrieved_ids
            stmts = by_cid.get(c.citation_id, [])
            supports = bool(
                exists
                and stmts
                and scorer.score(" ".join(stmts), [text or ""], question=q.question).supported_share >= 0.5
            )
            checks.append(
                {
                    "id": c.citation_id,
                    "chunk_id": c.chunk_id,
                    "exists": exists,
                    "in_prompt": bool(in_prompt),
                    "supports": supports,
                }
            )
        rec["citation_checks"] = checks
    rec["ok"] = _ok(rec)
    return rec


def _norm(text: str) -> str:
    return " ".join(words(text))


def _leaks_into(chunk: str, answer: str, min_words: int = 8) -> bool:
    """An answer repeats a forbidden chunk when it carries a run of `min_words` of its words, or a
    distinctive token (a code-like word with digits) of it."""
    cw, aw = words(chunk), words(answer)
    if not cw or not aw:
        return False
    codes = {w.lower() for w in _CODE.findall(chunk) if any(ch.isalpha() for ch in w)}
    low = answer.lower()
    if any(c in low for c in codes):
        return True
    grams = {tuple(cw[i : i + min_words]) for i in range(max(0, len(cw) - min_words + 1))}
    return any(tuple(aw[i : i + min_words]) in grams for i in range(max(0, len(aw) - min_words + 1)))


def _ok(rec: Mapping[str, Any]) -> bool:
    """Pass/fail of one question: no error, no exposure, retrieval hit, right abstention, valid citations."""
    if rec["error"] or rec["unauthorized"] or rec["never_cite_violation"]:
        return False
    if rec.get("hit") is False or rec.get("abstention_correct") is False:
        return False
    return all(c["exists"] and c["in_prompt"] for c in rec.get("citation_checks", []))


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def aggregate(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Run-level metrics (flat name -> value). Metrics with no question to measure them are absent."""
    m: dict[str, float] = {"questions": float(len(records))}
    if not records:
        return m
    m["error_rate"] = _mean([1.0 if r["error"] else 0.0 for r in records])
    judged = [r for r in records if r["judged"]]
    if judged:
        for k in RECALL_KS:
            m[f"recall_at_{k}"] = _mean([r[f"recall_at_{k}"] for r in judged])
        m["mrr_at_10"] = _mean([r["mrr_at_10"] for r in judged])
        m["ndcg_at_10"] = _mean([r["ndcg_at_10"] for r in judged])
        m["empty_result_rate"] = _mean([1.0 if r["empty"] else 0.0 for r in judged])
    chunked = [r["chunk_recall_at_10"] for r in records if "chunk_recall_at_10" in r]
    if chunked:
        m["chunk_recall_at_10"] = _mean(chunked)
    answered = [r for r in records if r.get("answered")]
    if answered:
        m["groundedness"] = _mean([r["groundedness"] for r in answered])
        m["grounded_rate"] = _mean([1.0 if r["grounded"] else 0.0 for r in answered])
        m["uncited_answer_rate"] = _mean([0.0 if r["citations"] else 1.0 for r in answered])
    checks = [c for r in answered for c in r.get("citation_checks", [])]
    if checks:
        m["citation_accuracy"] = _mean(
            [1.0 if c["exists"] and c["in_prompt"] and c["supports"] else 0.0 for c in checks]
        )
        m["citation_exists_rate"] = _mean([1.0 if c["exists"] else 0.0 for c in checks])
        m["citation_in_prompt_rate"] = _mean([1.0 if c["in_prompt"] else 0.0 for c in checks])
        m["citation_support_rate"] = _mean([1.0 if c["supports"] else 0.0 for c in checks])
    facts = [r["fact_recall"] for r in records if "fact_recall" in r]
    if facts:
        m["answer_fact_recall"] = _mean(facts)
    abst = [r for r in records if r.get("expect_abstain") is not None]
    if abst:
        m["abstention_accuracy"] = _mean([1.0 if r["abstention_correct"] else 0.0 for r in abst])
    m["unauthorized_document_rate"] = _mean([1.0 if r["unauthorized"] else 0.0 for r in records])
    m["unauthorized_retrieval_rate"] = _mean([1.0 if r["unauthorized_retrieved"] else 0.0 for r in records])
    m["never_cite_violations"] = float(sum(1 for r in records if r["never_cite_violation"]))
    m["question_pass_rate"] = _mean([1.0 if r["ok"] else 0.0 for r in records])
    m.update(latency_metrics(records))
    for kind in ("prompt_tokens", "completion_tokens"):
        vals = [float(r[kind]) for r in records if r.get(kind)]
        if vals:
            m[f"{kind}_mean"] = _mean(vals)
            m[f"{kind}_p95"] = percentile(vals, 95)
            m[f"{kind}_total"] = float(sum(vals))
    return m


def latency_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """End-to-end (client-measured) and per-stage latency percentiles, overall and by request class."""
    out: dict[str, float] = {}
    done = [r for r in records if not r["error"]]
    classes: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in done:
        classes[r["request_class"]].append(r)
    groups: list[tuple[str, list[Mapping[str, Any]]]] = [("", done)]
    groups += [(f"{c}_", rs) for c, rs in sorted(classes.items())]
    for prefix, rs in groups:
        if not rs:
            continue
        e2e = [float(r["latency_ms"]) for r in rs]
        for q in LATENCY_QUANTILES:
            out[f"latency_{prefix}e2e_ms_p{q}"] = percentile(e2e, q)
        stages: dict[str, list[float]] = defaultdict(list)
        for r in rs:
            for stage, v in r["timings_ms"].items():
                stages[stage].append(float(v))
        for stage, vals in sorted(stages.items()):
            for q in LATENCY_QUANTILES:
                out[f"latency_{prefix}{stage}_ms_p{q}"] = percentile(vals, q)
    return out


def check_thresholds(metrics: Mapping[str, float], thresholds: Mapping[str, Threshold]) -> list[str]:
    """Failures, one readable line each; the built-in unauthorized-document bound always applies."""
    merged = {**thresholds, **BUILTIN_THRESHOLDS}
    failures = []
    for name, th in sorted(merged.items()):
        if name not in metrics:
            failures.append(f"{name}: not measured in this run (threshold {th.describe()})")
            continue
        val = metrics[name]
        if not th.check(val):
            failures.append(f"{name} = {val:.4g}, needs {th.describe()}")
    return failures


KNOWN_METRICS = {
    "questions",
    "error_rate",
    *(f"recall_at_{k}" for k in RECALL_KS),
    "mrr_at_10",
    "ndcg_at_10",
    "empty_result_rate",
    "chunk_recall_at_10",
    "groundedness",
    "grounded_rate",
    "uncited_answer_rate",
    "citation_accuracy",
    "citation_exists_rate",
    "citation_in_prompt_rate",
    "citation_support_rate",
    "answer_fact_recall",
    "abstention_accuracy",
    "unauthorized_document_rate",
    "unauthorized_retrieval_rate",
    "never_cite_violations",
    "question_pass_rate",
}
_DYNAMIC = re.compile(r"^(latency_[a-z0-9_]+_ms_p(50|95|99)|(prompt|completion)_tokens_(mean|p95|total))$")


def unknown_metrics(names: Iterable[str]) -> list[str]:
    """Threshold keys that name no metric this runner computes (typos fail loudly, not silently)."""
    return sorted(n for n in names if n not in KNOWN_METRICS and not _DYNAMIC.match(n))
