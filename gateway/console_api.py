"""The console's JSON endpoints (`/v1/console/...`): documents, dead letters, index generations, eval runs
and the human review queue.

Authorized exactly as the native API: tenant, user and groups come from the credential only (a bearer JWT
or API key, or `X-API-Key`). Every row is the caller's tenant's, and a row that names a document is shown
only when the caller's ACL admits it (the document's live ACL; for a review, every passage it cites, both
as the search saw it and as it is now). Acting needs a group (`console.operators_group`: replay, promote,
roll back; `console.reviewers_group`: the review queue). Errors are the native error body: a code, its
fixed message and the correlation id; details go to the log.

Handlers stay thin: the row shaping and the checks are the pure functions at the top.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import Principal
from gateway.console_backend import ConsoleBackend
from gateway.openai_api import OpenAICaller
from gateway.review import ReviewQueue
from gateway.routes import CorrelationId
from gateway.service import RejectedError
from ragstream.core.acl import may_read
from ragstream.generations.lifecycle import LifecycleError, PromotionRefusedError
from ragstream.generations.record import RegistryView
from ragstream.ports import DocumentState
from ragstream.settings import ConsoleSettings, Settings
from schemas.dlq import DeadLetter
from schemas.review import AnswerFlagged, ReviewDecided, Verdict

log = logging.getLogger(__name__)
PREFIX = "/v1/console"
_PLOT = re.compile(r"[a-z][a-z0-9_]{0,40}")
_SLUG = re.compile(r"[A-Za-z0-9._-]{1,200}")


# ------------------------------------------------------------------------------------------ pure rows
def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def readable(p: Principal, principals: Iterable[str], groups: Iterable[str]) -> bool:
    return may_read(principals, groups, p.caller())


def document_row(st: DocumentState, now: datetime) -> dict[str, Any]:
    """Lineage and freshness of one document; the ACL as its groups and a count of named users."""
    age = (now - st.indexed_at).total_seconds() if st.indexed_at else None
    lag = (
        (st.indexed_at - st.source_occurred_at).total_seconds()
        if st.indexed_at and st.source_occurred_at
        else None
    )
    return {
        "document_id": st.document_id,
        "title": st.title,
        "source_id": st.source_id,
        "source_version": st.live_version,
        "content_sha256": st.content_sha256[:16],
        "chunk_count": len(st.chunk_ids),
        "generation": st.generation,
        "normalizer_version": st.normalizer_version,
        "policy_hash": st.policy_hash[:12],
        "embedding_model": st.embedding_model,
        "indexed_at": _iso(st.indexed_at),
        "source_occurred_at": _iso(st.source_occurred_at),
        "age_s": round(age, 1) if age is not None else None,
        "indexing_lag_s": round(lag, 3) if lag is not None else None,
        "acl": {"groups": sorted(st.acl_groups), "principals": len(st.acl_principals)},
    }


def visible_documents(p: Principal, states: Iterable[DocumentState], now: datetime) -> list[dict[str, Any]]:
    rows = [document_row(s, now) for s in states if readable(p, s.acl_principals, s.acl_groups)]
    return sorted(rows, key=lambda r: r["indexed_at"] or "", reverse=True)


def dead_letter_row(d: DeadLetter, topic_prefix: str) -> dict[str, Any]:
    """What failed and why, by code: no message text (it may quote a document) and no record key."""
    return {
        "dead_letter_id": d.dead_letter_id,
        "stage": d.stage,
        "reason": d.reason,
        "error_class": d.error_class,
        "topic": d.original_topic.removeprefix(topic_prefix),
        "failed_at": _iso(d.failed_at),
        "replayable": not d.raw_truncated,
        "replayed_from": d.replayed_from,
    }


def tenant_dead_letters(p: Principal, letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    """Only letters attributed to the caller's tenant (an undecodable record has no tenant: never shown)."""
    return [d for d in letters if d.tenant_id == p.tenant_id]


def _eval_summary(e: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "kind": e.get("kind"),
        "at": e.get("at"),
        "passed": e.get("passed"),
        "results": [
            {
                "set": r.get("set"),
                "evaluator": r.get("evaluator"),
                "passed": r.get("passed"),
                "metrics": r.get("metrics", {}),
            }
            for r in e.get("results", [])
            if isinstance(r, Mapping)
        ],
    }


def generation_rows(view: RegistryView, tenant: str) -> list[dict[str, Any]]:
    """Generations as the tenant sees them: `live` is what serves this tenant; other tenants' pins and
    evaluations never show."""
    serving = view.tenant_generation(tenant) or view.live
    # Promotions this tenant was part of: global ones, and its own pins (another tenant's are not shown).
    ours = set(view.history) | set(view.tenant_history.get(tenant, ()))
    rows = []
    for name, st in view.generations.items():
        status = view.status(name)
        if name == serving:
            status = "live"
        elif status in ("live", "live-for-tenants", "previous"):
            status = "previous" if name in ours else "ready"
        rec = st.record
        rows.append(
            {
                "name": name,
                "status": status,
                "created_at": _iso(rec.created_at),
                "ready_at": _iso(st.ready_at),
                "promoted_at": _iso(st.promoted_at) if name in ours else None,
                "retired_at": _iso(st.retired_at),
                "embedding_model": rec.spec.embedding_model,
                "normalizer_version": rec.spec.normalizer_version,
                "policy_hash": rec.spec.policy_hash[:12],
                "evals": [_eval_summary(e) for e in st.evals if e.get("tenant") in (None, tenant)],
            }
        )
    return sorted(rows, key=lambda r: r["created_at"] or "", reverse=True)


def eval_run_row(folder: Path, result: Mapping[str, Any], tenant: str) -> dict[str, Any] | None:
    """A run of the caller's tenant only (every question asked as it): set, metrics and plot names. The
    per-question texts stay out (answers may quote documents the reader may not read)."""
    tenants = {q.get("tenant") for q in result.get("questions", []) if isinstance(q, Mapping)}
    if tenants != {tenant}:
        return None
    plots = sorted(p.stem for p in folder.glob("*.svg") if _PLOT.fullmatch(p.stem))
    return {
        "set": result.get("set"),
        "run_id": result.get("run_id"),
        "folder": f"{folder.parent.name}/{folder.name}",
        "started_at": result.get("started_at"),
        "finished_at": result.get("finished_at"),
        "generation": result.get("generation"),
        "passed": result.get("passed"),
        "failures": [str(f)[:200] for f in result.get("failures", [])][:20],
        "metrics": {k: v for k, v in result.get("metrics", {}).items() if isinstance(v, int | float)},
        "questions": len(result.get("questions", [])),
        "plots": plots,
    }


def review_visible(p: Principal, flag: AnswerFlagged, live: Mapping[str, DocumentState]) -> bool:
    """The caller's tenant, and every passage readable by its ACL at search time and its live ACL now."""
    if flag.tenant_id != p.tenant_id:
        return False
    for ps in flag.passages:
        st = live.get(ps.document_id)
        if st is None or not readable(p, ps.acl_principals, ps.acl_groups):
            return False
        if not readable(p, st.acl_principals, st.acl_groups):
            return False
    return True


def review_row(flag: AnswerFlagged, decision: ReviewDecided | None = None) -> dict[str, Any]:
    return {
        "query_id": flag.query_id,
        "asked_at": _iso(flag.occurred_at),
        "question": flag.question,
        "answer": flag.answer,
        "reasons": list(flag.reasons),
        "groundedness": flag.groundedness,
        "unsupported_citations": list(flag.unsupported_citations),
        "passages": [
            {
                "citation_id": ps.citation_id,
                "document_id": ps.document_id,
                "title": ps.title,
                "source_version": ps.source_version,
                "chunk_id": ps.chunk_id,
                "text": ps.text,
                "supports": ps.supports,
            }
            for ps in flag.passages
        ],
        "generation": flag.generation,
        "decision": (
            {"verdict": decision.verdict, "reviewer": decision.reviewer, "at": _iso(decision.occurred_at)}
            if decision
            else None
        ),
    }


class DecisionRequest(BaseModel):
    """A reviewer's verdict; `curate` also writes the question into the tenant's curated set."""

    model_config = ConfigDict(extra="forbid")
    verdict: Verdict
    note: str = Field(default="", max_length=1000)
    curate: bool = False
    # Default: the answer's cited documents for a right answer, none for a wrong one.
    expected_docs: list[Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=20)
    expected_facts: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default=[], max_length=10
    )
    expect_abstain: bool = False


class CurationError(ValueError):
    """The reviewer's curated question would not be a valid question (evals/FORMAT.md rules)."""


def curated_question(flag: AnswerFlagged, req: DecisionRequest) -> dict[str, Any]:
    """A question of the question-set format (evals/FORMAT.md) asked as the original caller, expecting
    what the reviewer confirmed. Only the answer's own documents may be expected."""
    cited = list(dict.fromkeys(ps.document_id for ps in flag.passages))
    docs = req.expected_docs if req.expected_docs is not None else (cited if req.verdict == "right" else [])
    if not set(docs) <= set(cited):
        raise CurationError("expected documents must be among the answer's passages")
    if req.expect_abstain and (docs or req.expected_facts):
        raise CurationError("an abstention question expects no documents or facts")
    if not (docs or req.expected_facts or req.expect_abstain):
        raise CurationError("a curated question needs expected documents, facts or an abstention")
    q: dict[str, Any] = {
        "id": f"review-{flag.query_id}",
        "question": flag.question,
        "tenant": flag.tenant_id,
        "user": flag.subject,
        "groups": list(flag.groups),
        "request_class": "interactive",
        "tags": ["curated", f"review-{req.verdict}", *flag.reasons],
    }
    if req.expect_abstain:
        q["expect_abstain"] = True
    else:
        q["expected_docs"] = list(dict.fromkeys(docs))
        if req.expected_facts:
            q["expected_facts"] = list(req.expected_facts)
    return q


def append_curated(folder: Path, tenant: str, question: dict[str, Any]) -> Path:
    """Append to `<folder>/<tenant>.jsonl` (a JSONL question set: a `set` header line first); a question
    already there (by id) is not written twice."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{tenant}.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and json.loads(line).get("id") == question["id"]:
                return path
    else:
        header = {
            "set": {
                "name": f"curated-{tenant}",
                "description": "questions curated from the human review queue",
                "defaults": {"tenant": tenant},
            }
        }
        path.write_text(json.dumps(header) + "\n", encoding="utf-8")
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(question, ensure_ascii=False) + "\n")
    return path


# ------------------------------------------------------------------------------------------ handlers
def backend(request: Request) -> ConsoleBackend:
    return request.app.state.console_backend


def reviews(request: Request) -> ReviewQueue:
    return request.app.state.reviews


def settings(request: Request) -> Settings:
    return request.app.state.gateway.settings


Backend = Annotated[ConsoleBackend, Depends(backend)]
Reviews = Annotated[ReviewQueue, Depends(reviews)]
Cfg = Annotated[Settings, Depends(settings)]
console_api = APIRouter(prefix=PREFIX, tags=["console"], include_in_schema=False)
_curate_lock = asyncio.Lock()


def require(p: Principal, group: str) -> None:
    if group not in p.groups:
        raise RejectedError(403, "forbidden", internal=f"{p.subject} lacks group {group}")


def unavailable(what: str, exc: Exception) -> RejectedError:
    return RejectedError(
        503, "unavailable", message=f"{what} is unavailable; retry later", internal=repr(exc)
    )


def roles(p: Principal, cfg: ConsoleSettings) -> dict[str, bool]:
    return {"operator": cfg.operators_group in p.groups, "reviewer": cfg.reviewers_group in p.groups}


@console_api.get("/me")
async def me(p: OpenAICaller, s: Cfg) -> dict[str, Any]:
    return {"tenant": p.tenant_id, "subject": p.subject, "groups": list(p.groups), **roles(p, s.console)}


@console_api.get("/documents")
async def documents(p: OpenAICaller, b: Backend, s: Cfg) -> dict[str, Any]:
    try:
        states = await b.documents(p.tenant_id, s.console.max_rows)
    except Exception as exc:
        raise unavailable("the index", exc) from exc
    return {"documents": visible_documents(p, states, datetime.now(UTC))}


async def _letters(p: Principal, b: ConsoleBackend) -> list[DeadLetter]:
    try:
        return tenant_dead_letters(p, await b.dead_letters())
    except Exception as exc:
        raise unavailable("the dead-letter topics", exc) from exc


@console_api.get("/dead-letters")
async def dead_letters(p: OpenAICaller, b: Backend, s: Cfg) -> dict[str, Any]:
    letters = (await _letters(p, b))[-s.console.max_rows :]
    rows = [dead_letter_row(d, s.kafka.topic_prefix) for d in reversed(letters)]
    return {"dead_letters": rows, **roles(p, s.console)}


@console_api.post("/dead-letters/{dead_letter_id}/replay")
async def replay_dead_letter(dead_letter_id: str, p: OpenAICaller, b: Backend, s: Cfg) -> dict[str, Any]:
    require(p, s.console.operators_group)
    found = [d for d in await _letters(p, b) if d.dead_letter_id == dead_letter_id]
    if not found:
        raise RejectedError(404, "not_found", message="no such dead letter")
    if found[0].raw_truncated:
        raise RejectedError(400, "bad_request", message="this dead letter cannot be replayed; re-publish")
    try:
        await b.replay(found[0])
    except Exception as exc:
        raise unavailable("replay", exc) from exc
    log.info("dead letter %s replayed by %s (tenant %s)", dead_letter_id, p.subject, p.tenant_id)
    return {"replayed": dead_letter_id}


async def _view(b: ConsoleBackend) -> RegistryView | None:
    try:
        return await b.generations()
    except Exception as exc:
        raise unavailable("the generation registry", exc) from exc


@console_api.get("/generations")
async def generations(p: OpenAICaller, b: Backend, s: Cfg) -> dict[str, Any]:
    view = await _view(b)
    rows = generation_rows(view, p.tenant_id) if view is not None else []
    return {"generations": rows, **roles(p, s.console)}


async def _lifecycle(p: Principal, op: Any) -> dict[str, Any]:
    try:
        out = await op
    except PromotionRefusedError as exc:
        raise RejectedError(409, "conflict", message="the evaluation gate refused the promotion") from exc
    except LifecycleError as exc:
        raise RejectedError(409, "conflict", internal=str(exc)) from exc
    except Exception as exc:
        raise unavailable("the generation registry", exc) from exc
    log.info("generation change by %s for tenant %s: %s", p.subject, p.tenant_id, out)
    return {k: out.get(k) for k in ("promoted", "rolled_back", "to", "from", "passed") if k in out}


@console_api.post("/generations/{name}/promote")
async def promote(name: str, p: OpenAICaller, b: Backend, s: Cfg) -> dict[str, Any]:
    """Promote for the caller's tenant only (a tenant pin): an operator never moves other tenants."""
    require(p, s.console.operators_group)
    return await _lifecycle(p, b.promote(name, p.tenant_id))


@console_api.post("/generations/rollback")
async def rollback(p: OpenAICaller, b: Backend, s: Cfg) -> dict[str, Any]:
    require(p, s.console.operators_group)
    return await _lifecycle(p, b.rollback(p.tenant_id))


async def _runs(p: Principal, b: ConsoleBackend, limit: int) -> list[tuple[Path, dict[str, Any]]]:
    try:
        runs = await b.eval_runs(limit)
    except Exception as exc:
        raise unavailable("the eval reports", exc) from exc
    return [(f, r) for f, r in runs if eval_run_row(f, r, p.tenant_id) is not None]


@console_api.get("/evals")
async def evals(p: OpenAICaller, b: Backend, s: Cfg) -> dict[str, Any]:
    rows = [eval_run_row(f, r, p.tenant_id) for f, r in await _runs(p, b, s.console.max_rows)]
    return {"runs": rows}


@console_api.get("/evals/{set_dir}/{run_dir}/plots/{plot}.svg")
async def eval_plot(set_dir: str, run_dir: str, plot: str, p: OpenAICaller, b: Backend, s: Cfg) -> Response:
    """A stored run's SVG plot (written by the eval report), for a run the caller may see."""
    if not (_SLUG.fullmatch(set_dir) and _SLUG.fullmatch(run_dir) and _PLOT.fullmatch(plot)):
        raise RejectedError(404, "not_found", message="no such plot")
    for folder, _ in await _runs(p, b, s.console.max_rows):
        if (folder.parent.name, folder.name) == (set_dir, run_dir) and (folder / f"{plot}.svg").is_file():
            svg = await asyncio.to_thread((folder / f"{plot}.svg").read_bytes)
            return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})
    raise RejectedError(404, "not_found", message="no such plot")


async def _visible_reviews(
    p: Principal, b: ConsoleBackend, flags: list[AnswerFlagged]
) -> list[AnswerFlagged]:
    docs = list(dict.fromkeys(ps.document_id for f in flags for ps in f.passages))
    try:
        live = await b.document_states(p.tenant_id, docs) if docs else {}
    except Exception as exc:
        raise unavailable("the index", exc) from exc
    return [f for f in flags if review_visible(p, f, live)]


def _queue(q: ReviewQueue) -> ReviewQueue:
    if not q.ready:
        raise RejectedError(503, "unavailable", message="the review queue is unavailable; retry later")
    return q


@console_api.get("/reviews")
async def list_reviews(p: OpenAICaller, b: Backend, q: Reviews, s: Cfg) -> dict[str, Any]:
    """The tenant's pending reviews (reviewers only: they show other users' questions)."""
    require(p, s.console.reviewers_group)
    flags = _queue(q).pending(p.tenant_id)[: s.console.max_rows]
    return {"reviews": [review_row(f) for f in await _visible_reviews(p, b, flags)]}


@console_api.post("/reviews/{query_id}/decision")
async def decide(
    query_id: str, body: DecisionRequest, p: OpenAICaller, b: Backend, q: Reviews, s: Cfg, cid: CorrelationId
) -> dict[str, Any]:
    require(p, s.console.reviewers_group)
    flag = _queue(q).get(p.tenant_id, query_id)
    if flag is None or not await _visible_reviews(p, b, [flag]):
        raise RejectedError(404, "not_found", message="no such review")
    if q.decision(p.tenant_id, query_id) is not None:
        raise RejectedError(409, "conflict", message="this review is already decided")
    curated_id: str | None = None
    if body.curate:
        try:
            question = curated_question(flag, body)
        except CurationError as exc:
            raise RejectedError(400, "bad_request", message=str(exc)) from exc
        async with _curate_lock:
            await asyncio.to_thread(append_curated, s.console.curated_dir, p.tenant_id, question)
        curated_id = question["id"]
    decision = ReviewDecided(
        tenant_id=p.tenant_id,
        correlation_id=cid or flag.correlation_id,
        causation_id=flag.event_id,
        producer="gateway",
        query_id=query_id,
        reviewer=p.subject,
        verdict=body.verdict,
        note=body.note,
        curated_question_id=curated_id,
    )
    try:
        await q.decide(decision)
    except Exception as exc:
        raise unavailable("the review queue", exc) from exc
    return {"query_id": query_id, "verdict": body.verdict, "curated_question_id": curated_id}
