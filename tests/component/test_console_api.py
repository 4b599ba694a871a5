"""The console's JSON endpoints on an in-memory hub, a fake console backend and an in-memory review queue:
every page is the caller's tenant's, rows naming a document only when the caller's ACL admits it; acting
needs the operators / reviewers group; errors are a code and a correlation id; a decision is published,
counted, and curates a valid question; earlier chat turns reach the query spec."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from evals.questions import load_set
from gateway.app import create_app
from gateway.hub import AnswerHub
from gateway.review import MemoryReviewQueue
from gateway.server import serve_in_process
from ragstream.generations.record import GenerationEvent, GenerationRecord, GenerationSpec, RegistryView
from ragstream.ports import DocumentState
from ragstream.settings import AuthSettings, ConsoleSettings, Settings
from schemas.dlq import DeadLetter
from schemas.envelope import utcnow
from schemas.review import AnswerFlagged, FlaggedPassage
from tests.component.test_gateway_clients import NoLag, Pub

pytestmark = pytest.mark.component
SECRET = "globex-only-canary-ZX81"
INTERNAL = "weaviate at 10.0.0.7 refused"


def _key(tenant: str, subject: str, *groups: str) -> tuple[str, dict[str, Any]]:
    return f"k-{secrets.token_urlsafe(12)}", {"tenant": tenant, "subject": subject, "groups": list(groups)}


KEYS = {
    "acme": _key("acme", "alice", "everyone"),
    "acme-op": _key("acme", "olga", "everyone", "ragstream-operators", "ragstream-reviewers"),
    "acme-finance-reviewer": _key("acme", "fred", "everyone", "finance", "ragstream-reviewers"),
    "globex-op": _key("globex", "gus", "everyone", "ragstream-operators", "ragstream-reviewers"),
}


def _state(doc: str, groups: tuple[str, ...], **kw: Any) -> DocumentState:
    now = utcnow()
    return DocumentState(
        document_id=doc,
        live_version=f"v-{doc}",
        chunk_ids=("c1", "c2", "c3"),
        acl_groups=groups,
        acl_principals=("someone",),
        title=doc.upper(),
        generation="g1",
        indexed_at=now - timedelta(minutes=5),
        source_occurred_at=now - timedelta(minutes=5, seconds=2),
        **kw,
    )


DOCS = {
    "acme": [_state("handbook.md", ("everyone",)), _state("budget.md", ("finance",))],
    "globex": [_state(f"{SECRET}.md", ("everyone",))],
}


def _letter(tenant: str | None, i: int) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=f"dl-{tenant}-{i}",
        stage="chunker",
        consumer_group="ragstream.chunker",
        reason="undecodable",
        error_class="EventDecodeError",
        message=f"document {SECRET}.md broke",
        original_topic="ragstream.ingest.documents-normalized.v1",
        original_partition=0,
        original_offset=i,
        raw_b64="e30=",
        tenant_id=tenant,
        failed_at=utcnow(),
    )


def _view() -> RegistryView:
    records = []
    for i, n in enumerate(("g1", "g2", "g3")):
        spec = GenerationSpec(
            index="RagChunks",
            normalizer_version="n1",
            chunking_policy={},
            policy_hash=f"policy{i}",
            embedding_model="minilm",
            embedding_revision="r",
        )
        records.append(
            GenerationRecord(
                generation_id=spec.content_id(),
                name=n,
                spec=spec,
                chunks_collection=f"RagChunks_{n}",
                documents_collection=f"RagDocuments_{n}",
                created_at=utcnow() + timedelta(seconds=i),
            )
        )
    result = {"set": "smoke", "evaluator": "questions", "passed": True, "metrics": {"recall_at_5": 0.9}}
    events = [
        GenerationEvent.new("g1", "ready"),
        GenerationEvent.new("g2", "ready"),
        GenerationEvent.new("g3", "ready"),
        GenerationEvent.new("g1", "adopted"),
        GenerationEvent.new("g2", "evaluated", data={"passed": True, "results": [result]}),
        GenerationEvent.new("g3", "evaluated", tenant="globex", data={"passed": True, "results": [result]}),
        GenerationEvent.new("g3", "promoted", tenant="globex"),
    ]
    return RegistryView.fold(records, [e.model_copy(update={"seq": i}) for i, e in enumerate(events)])


@dataclass
class FakeBackend:
    eval_root: Path
    replayed: list[str] = field(default_factory=list)
    promoted: list[tuple[str, str]] = field(default_factory=list)
    broken: bool = False

    async def documents(self, tenant: str, limit: int) -> list[DocumentState]:
        if self.broken:
            raise RuntimeError(INTERNAL)
        return DOCS.get(tenant, [])[:limit]

    async def document_states(self, tenant: str, document_ids: list[str]) -> dict[str, DocumentState]:
        return {s.document_id: s for s in DOCS.get(tenant, []) if s.document_id in document_ids}

    async def dead_letters(self) -> list[DeadLetter]:
        return [_letter("acme", 1), _letter("globex", 2), _letter(None, 3)]

    async def replay(self, dead: DeadLetter) -> None:
        self.replayed.append(dead.dead_letter_id)

    async def generations(self) -> RegistryView | None:
        return _view()

    async def promote(self, name: str, tenant: str) -> dict[str, Any]:
        self.promoted.append((name, tenant))
        return {"promoted": name, "tenant": tenant, "from": "g1", "passed": True}

    async def rollback(self, tenant: str) -> dict[str, Any]:
        return {"rolled_back": "g2", "to": "g1", "tenant": tenant}

    async def eval_runs(self, limit: int) -> list[tuple[Path, dict[str, Any]]]:
        from gateway.console_backend import read_eval_runs

        return read_eval_runs(self.eval_root, limit)


def _write_run(root: Path, set_name: str, run_id: str, tenant: str) -> None:
    folder = root / set_name / run_id
    folder.mkdir(parents=True)
    result = {
        "set": set_name,
        "run_id": run_id,
        "passed": True,
        "metrics": {"recall_at_5": 1.0},
        "questions": [{"tenant": tenant, "question": f"about {SECRET}", "answer": SECRET}],
    }
    (folder / "result.json").write_text(json.dumps(result))
    (folder / "ndcg.svg").write_text(f"<svg xmlns='http://www.w3.org/2000/svg'><title>{tenant}</title></svg>")


def _flag(tenant: str, qid: str, doc: str, groups: tuple[str, ...]) -> AnswerFlagged:
    return AnswerFlagged(
        tenant_id=tenant,
        query_id=qid,
        subject="alice",
        groups=("everyone",),
        question=f"question {qid}?",
        answer="It opens at nine [1].",
        reasons=("low_support", "unsupported_citation"),
        groundedness=0.2,
        unsupported_citations=("1",),
        passages=(
            FlaggedPassage(
                citation_id="1",
                document_id=doc,
                chunk_id="c1",
                source_version=f"v-{doc}",
                text="The cafeteria opens at eight.",
                acl_groups=groups,
                supports=False,
            ),
        ),
    )


@dataclass
class Env:
    url: str
    pub: Pub
    backend: FakeBackend
    queue: MemoryReviewQueue
    curated: Path

    def client(self, who: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {KEYS[who][0]}"})


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("console")
    _write_run(tmp / "evals", "acme-set", "20260101T000000-aaaaaa", "acme")
    _write_run(tmp / "evals", "globex-set", "20260101T000001-bbbbbb", "globex")
    s = Settings(
        auth=AuthSettings(jwt_secret=SecretStr(secrets.token_urlsafe(48)), api_keys=dict(KEYS.values())),
        console=ConsoleSettings(curated_dir=tmp / "curated", eval_reports_dir=tmp / "evals"),
    )
    hub = AnswerHub()
    pub = Pub(hub)
    backend = FakeBackend(tmp / "evals")
    queue = MemoryReviewQueue()
    queue.add(_flag("acme", "q-open", "handbook.md", ("everyone",)))
    queue.add(_flag("acme", "q-finance", "budget.md", ("finance",)))
    queue.add(_flag("globex", "q-globex", f"{SECRET}.md", ("everyone",)))
    app = create_app(s, publisher=pub, hub=hub, lag_probe=NoLag(), console_backend=backend, reviews=queue)
    async with serve_in_process(app) as url:
        yield Env(url, pub, backend, queue, tmp / "curated")


async def _everything(env: Env, who: str) -> str:
    """Every console page as `who` reads it, concatenated."""
    async with env.client(who) as h:
        out = []
        for page in ("me", "documents", "dead-letters", "generations", "evals", "reviews"):
            r = await h.get(f"/v1/console/{page}")
            out.append(r.text)
        return "\n".join(out)


async def test_documents_lineage_freshness_and_acl(env: Env) -> None:
    async with env.client("acme") as h:
        docs = (await h.get("/v1/console/documents")).json()["documents"]
    assert [d["document_id"] for d in docs] == ["handbook.md"]  # budget.md is finance-only
    d = docs[0]
    assert d["source_version"] == "v-handbook.md" and d["chunk_count"] == 3 and d["generation"] == "g1"
    assert 299 <= d["age_s"] < 3600 and d["indexing_lag_s"] == pytest.approx(2.0, abs=0.01)
    assert d["acl"] == {"groups": ["everyone"], "principals": 1}
    async with env.client("acme-finance-reviewer") as h:
        docs = (await h.get("/v1/console/documents")).json()["documents"]
    assert {d["document_id"] for d in docs} == {"handbook.md", "budget.md"}


async def test_no_page_shows_another_tenants_data(env: Env) -> None:
    for who in ("acme", "acme-op", "acme-finance-reviewer"):
        seen = await _everything(env, who)
        assert SECRET not in seen and "globex" not in seen, who
    seen = await _everything(env, "globex-op")
    assert "handbook" not in seen and "acme" not in seen
    assert SECRET in seen  # the other tenant sees its own


async def test_dead_letters_reasons_and_operator_replay(env: Env) -> None:
    async with env.client("acme") as h:
        body = (await h.get("/v1/console/dead-letters")).json()
        assert [d["dead_letter_id"] for d in body["dead_letters"]] == ["dl-acme-1"]
        assert body["dead_letters"][0]["reason"] == "undecodable" and body["operator"] is False
        refused = await h.post("/v1/console/dead-letters/dl-acme-1/replay")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    async with env.client("acme-op") as h:
        assert (await h.post("/v1/console/dead-letters/dl-globex-2/replay")).status_code == 404
        ok = await h.post("/v1/console/dead-letters/dl-acme-1/replay")
        assert ok.status_code == 200
    assert env.backend.replayed == ["dl-acme-1"]


async def test_generations_with_evals_and_tenant_scoped_promotion(env: Env) -> None:
    async with env.client("acme") as h:
        rows = {g["name"]: g for g in (await h.get("/v1/console/generations")).json()["generations"]}
        assert rows["g1"]["status"] == "live" and rows["g3"]["status"] == "ready"  # globex's pin hidden
        assert rows["g2"]["evals"][0]["results"][0]["metrics"] == {"recall_at_5": 0.9}
        assert rows["g3"]["evals"] == []  # globex's evaluation of g3
        assert (await h.post("/v1/console/generations/g2/promote")).status_code == 403
        assert (await h.post("/v1/console/generations/rollback")).status_code == 403
    async with env.client("globex-op") as h:
        rows = {g["name"]: g for g in (await h.get("/v1/console/generations")).json()["generations"]}
        assert rows["g3"]["status"] == "live"
    async with env.client("acme-op") as h:
        r = await h.post("/v1/console/generations/g2/promote")
        assert r.status_code == 200 and r.json()["promoted"] == "g2"
        assert (await h.post("/v1/console/generations/rollback")).json()["to"] == "g1"
    assert env.backend.promoted == [("g2", "acme")]


async def test_eval_reports_of_the_tenant_with_plots(env: Env) -> None:
    async with env.client("acme") as h:
        runs = (await h.get("/v1/console/evals")).json()["runs"]
        assert [r["set"] for r in runs] == ["acme-set"] and runs[0]["plots"] == ["ndcg"]
        assert runs[0]["metrics"] == {"recall_at_5": 1.0} and "about " not in json.dumps(runs)
        svg = await h.get(f"/v1/console/evals/{runs[0]['folder']}/plots/ndcg.svg")
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        other = await h.get("/v1/console/evals/globex-set/20260101T000001-bbbbbb/plots/ndcg.svg")
        assert other.status_code == 404
        assert (await h.get("/v1/console/evals/..%2F..%2Fetc/x/plots/passwd.svg")).status_code == 404


async def test_review_queue_needs_the_group_and_the_acl(env: Env) -> None:
    async with env.client("acme") as h:
        r = await h.get("/v1/console/reviews")
        assert r.status_code == 403 and set(r.json()["error"]) == {"code", "message", "correlation_id"}
    async with env.client("acme-op") as h:  # a reviewer without the finance group
        ids = [x["query_id"] for x in (await h.get("/v1/console/reviews")).json()["reviews"]]
        assert ids == ["q-open"]
        assert (
            await h.post("/v1/console/reviews/q-finance/decision", json={"verdict": "right"})
        ).status_code == 404
        assert (
            await h.post("/v1/console/reviews/q-globex/decision", json={"verdict": "right"})
        ).status_code == 404
    async with env.client("acme-finance-reviewer") as h:
        ids = {x["query_id"] for x in (await h.get("/v1/console/reviews")).json()["reviews"]}
        assert ids == {"q-open", "q-finance"}


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_decision_is_published_counted_and_curated(env: Env) -> None:
    before = _metric("ragstream_review_decisions_total", verdict="wrong")
    async with env.client("acme-finance-reviewer") as h:
        bad = await h.post(
            "/v1/console/reviews/q-finance/decision", json={"verdict": "wrong", "curate": True}
        )
        assert bad.status_code == 400  # a wrong answer needs what to expect instead
        body = {
            "verdict": "wrong",
            "curate": True,
            "expected_docs": ["budget.md"],
            "expected_facts": ["eight"],
        }
        r = await h.post("/v1/console/reviews/q-finance/decision", json=body)
        assert r.status_code == 200 and r.json()["curated_question_id"] == "review-q-finance"
        again = await h.post("/v1/console/reviews/q-finance/decision", json={"verdict": "right"})
        assert again.status_code == 409
        ids = {x["query_id"] for x in (await h.get("/v1/console/reviews")).json()["reviews"]}
        assert ids == {"q-open"}
    (decision,) = [d for d in env.queue.published if d.query_id == "q-finance"]
    assert decision.verdict == "wrong" and decision.reviewer == "fred" and decision.tenant_id == "acme"
    assert _metric("ragstream_review_decisions_total", verdict="wrong") == before + 1
    assert 0 < _metric("ragstream_review_rate") <= 1
    qset = load_set(env.curated / "acme.jsonl")
    (q,) = qset.questions
    assert q.id == "review-q-finance" and q.tenant == "acme" and q.user == "alice"
    assert list(q.expected_docs) == ["budget.md"] and list(q.expected_facts) == ["eight"]


async def test_backend_failure_is_a_code_and_correlation_id(env: Env) -> None:
    env.backend.broken = True
    try:
        async with env.client("acme") as h:
            r = await h.get("/v1/console/documents")
    finally:
        env.backend.broken = False
    assert r.status_code == 503 and INTERNAL not in r.text
    err = r.json()["error"]
    assert err["code"] == "unavailable" and err["correlation_id"] == r.headers["x-correlation-id"]
    async with httpx.AsyncClient(base_url=env.url) as h:
        assert (await h.get("/v1/console/documents")).status_code == 401


async def test_earlier_chat_turns_reach_the_query_spec(env: Env) -> None:
    messages = [
        {"role": "user", "content": "When does the acme cafeteria open?"},
        {"role": "assistant", "content": "At eight [1]."},
        {"role": "user", "content": "And on weekends?"},
    ]
    async with env.client("acme") as h:
        r = await h.post("/v1/chat/completions", json={"model": "ragstream", "messages": messages})
    assert r.status_code == 200
    q = env.pub.events[-1].query
    assert q.question == "And on weekends?" and q.history == ("When does the acme cafeteria open?",)
