"""Index generations on the real stack (Kafka + Weaviate): build beside live, gate, switch, roll back.

Each test owns its index family (collections `C<unique>_*`, `D<unique>_*`, registry `G<unique>`, live alias
`C<unique>`) and its topics, so nothing here touches the shared index. The bag-of-words HashEmbedder and the
extractive stub LLM stand in where the model is not the point; the plan-vs-build test uses the real model.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from application.pipeline import LocalPipeline
from evals.gate import runner_evaluator
from producers.publisher import DocumentPublisher
from ragstream import names
from ragstream.adapters.embedder import HashEmbedder
from ragstream.adapters.llm import ExtractiveStub
from ragstream.adapters.store import WeaviateStore
from ragstream.adapters.tokenizer import HFTokenizer
from ragstream.adapters.weaviate_client import connect
from ragstream.generations import signals
from ragstream.generations.build import start_build
from ragstream.generations.gate import Gate, RecallEvaluator
from ragstream.generations.lifecycle import Lifecycle, PromotionRefusedError
from ragstream.generations.models import policy_from
from ragstream.generations.plan import plan_rebuild
from ragstream.generations.record import stable_share
from ragstream.generations.registry import Registry
from ragstream.runtime.deps import Deps
from ragstream.runtime.queries import QueryClient
from ragstream.settings import Settings
from schemas.envelope import utcnow
from schemas.ingestion import Acl
from schemas.serving import Caller, QueryRequested, QuerySpec
from schemas.topics import QUERIES_REQUESTED
from tests.support.kafka import create_topics, isolated
from tests.support.pipeline import eventually

pytestmark = pytest.mark.integration
ALL = ("normalizer", "chunker", "embedder", "retrieval", "rerank", "generation")
TOPICS = ("payroll", "travel", "security", "onboarding", "facilities")
NOUNS = ("approval", "archive", "escalation")
WORDS = ("amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "jasper")
FILLER = (
    "Requests are filed through the internal portal and reviewed by the owning team within two days. "
    "Exceptions need a written justification and the sign-off of a department lead."
)
CANDIDATE_POLICY = {"max_tokens": 64, "overlap_tokens": 8}
DEGRADED_POLICY = {"max_tokens": 16, "max_chunks_per_document": 1}


def code(tenant: str, topic: str, noun: str) -> str:
    t, d, n = ("acme", "globex").index(tenant), TOPICS.index(topic), NOUNS.index(noun)
    return f"{WORDS[(t * 7 + d * 3 + n) % len(WORDS)].upper()}-{1000 + t * 100 + d * 10 + n}"


def corpus() -> dict[tuple[str, str], str]:
    docs = {}
    for tenant in ("acme", "globex"):
        for topic in TOPICS:
            sections = [
                f"## {topic.title()} {noun}\n\nThe {topic} {noun} code for {tenant} is "
                f"{code(tenant, topic, noun)}. {FILLER}"
                for noun in NOUNS
            ]
            docs[(tenant, f"{topic}.md")] = f"# {topic.title()} policy\n\n" + "\n\n".join(sections)
    return docs


# acme's questions: the changes published during the build are globex's (late.md added, facilities.md
# deleted), so live acme results must stay exactly the same, passage for passage.
QUESTIONS = [("acme", topic, noun) for topic in TOPICS[:4] for noun in ("archive", "escalation")]


def question(topic: str, noun: str) -> str:
    return f"What is the {topic} {noun} code?"


def gen_settings(settings: Settings, unique: str) -> Settings:
    """This test's own index family, registry and topics; fast routing refresh; no relevance floor (the
    bag-of-words embedder's cosines are small)."""
    index = settings.index.model_copy(
        update={
            "generation": "g0001",
            "chunks_collection_prefix": f"C{unique}",
            "documents_collection": f"D{unique}",
        }
    )
    generations = settings.generations.model_copy(
        update={"registry_collection": f"G{unique}", "routing_ttl_s": 0.2, "lag_poll_s": 0.2, "keep_last": 3}
    )
    serving = settings.serving.model_copy(update={"min_relevance": 0.0})
    return isolated(settings, unique, partitions=2, index=index, generations=generations, serving=serving)


@dataclass(frozen=True)
class Answer:
    qid: str
    ok: bool
    generation: str
    answer_generation: str
    chunks: tuple[str, ...]
    answer: str


class Client(QueryClient):
    """QueryClient that can pin a query to a generation (what the eval runner does)."""

    async def ask_gen(
        self, tenant: str, subject: str, text: str, generation: str | None = None, timeout_s: float = 30.0
    ) -> Answer:
        qid = str(uuid.uuid4())
        spec = QuerySpec(
            query_id=qid,
            question=text,
            caller=Caller(subject=subject, groups=("everyone",)),
            top_k=5,
            deadline_at=utcnow() + timedelta(seconds=timeout_s),
            generation=generation,
        )
        await self.producer.send(
            QUERIES_REQUESTED.name, QueryRequested(tenant_id=tenant, query=spec), qid.encode()
        )
        await asyncio.wait_for(self._done[qid].wait(), timeout_s)
        evs = self.events.pop(qid)
        self._done.pop(qid, None)
        final = next(e for e in evs if e.type in ("QueryAnswered", "QueryFailed"))
        retrieved = next((e for e in evs if e.type == "QueryRetrieved"), None)
        return Answer(
            qid=qid,
            ok=final.type == "QueryAnswered" and retrieved is not None and bool(retrieved.passages),
            generation=retrieved.generation if retrieved else "",
            answer_generation=getattr(final, "generation", ""),
            chunks=tuple(p.chunk_id for p in retrieved.passages) if retrieved else (),
            answer=getattr(final, "answer", getattr(final, "reason", "")),
        )


class Env:
    """Live pipeline (all six consumers) + query client + registry over this test's index family."""

    def __init__(self, settings: Settings, embedder: Any, consumers: tuple[str, ...] = ALL) -> None:
        self.s = settings
        self.embedder = embedder
        self.pipeline = LocalPipeline(
            settings, consumers, Deps(settings, embedder=embedder, llm=ExtractiveStub())
        )
        self.client = connect(settings.weaviate)
        self.registry = Registry(self.client, settings)
        self.query = Client(settings)

    def store(self, generation: str) -> WeaviateStore:
        return WeaviateStore(self.client, *names.collections(self.s.index, generation))

    async def __aenter__(self) -> Env:
        await create_topics(self.s.kafka)
        await self.pipeline.start()
        await self.query.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.query.__aexit__()
        await self.pipeline.stop()
        prefixes = (
            self.s.index.chunks_collection_prefix,
            self.s.index.documents_collection,
            self.registry.name,
        )
        if self.client.alias.get(alias_name=self.registry.alias) is not None:
            self.client.alias.delete(alias_name=self.registry.alias)
        for name in self.client.collections.list_all(simple=True):
            if name.startswith(prefixes):
                self.client.collections.delete(name)
        self.client.close()

    async def ingest(self, docs: dict[tuple[str, str], str]) -> None:
        async with DocumentPublisher(self.s) as pub:
            for (tenant, doc), text in docs.items():
                await pub.upsert(
                    tenant,
                    doc,
                    content=text.encode(),
                    mime_type="text/markdown",
                    acl=Acl(groups=("everyone",)),
                )
        live = self.store(self.s.index.generation)
        for tenant, doc in docs:
            await eventually(
                lambda t=tenant, d=doc: live.has_tenant(t) and live.get_state(t, d), timeout_s=90
            )

    async def answers(self, generation: str | None = None) -> dict[tuple[str, str, str], Answer]:
        return {
            (t, topic, noun): await self.query.ask_gen(t, "alice", question(topic, noun), generation)
            for t, topic, noun in QUESTIONS
        }


@pytest.fixture
async def env(settings: Settings, unique: str) -> AsyncIterator[Env]:
    async with Env(gen_settings(settings, unique), HashEmbedder()) as e:
        await e.ingest(corpus())
        yield e


class QueryLoop:
    """Asks the fixed questions over and over until stopped; keeps every answer."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.results: list[tuple[float, tuple[str, str, str], Answer]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            for key in QUESTIONS:
                t, topic, noun = key
                self.results.append(
                    (time.monotonic(), key, await self.env.query.ask_gen(t, "alice", question(topic, noun)))
                )

    def start(self) -> QueryLoop:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> list[tuple[float, tuple[str, str, str], Answer]]:
        self._stop.set()
        assert self._task is not None
        await self._task
        return self.results


def recall_set(tmp: Path, tenant: str = "acme") -> Path:
    path = tmp / "gate.recall.json"
    qs = [
        {"question": question(topic, noun), "documents": [f"{topic}.md"]}
        for topic in TOPICS[:4]
        for noun in ("archive", "escalation")
    ]
    path.write_text(json.dumps({"tenant": tenant, "k": 3, "min_recall": 0.8, "questions": qs}))
    return path


async def test_build_beside_live_gate_canary_tenant_promotion_switch_and_rollback(
    env: Env, tmp_path: Path
) -> None:
    s = env.s
    base = await env.answers()
    assert all(a.ok and a.generation == "g0001" == a.answer_generation for a in base.values())

    # Build a candidate under another chunking policy while live keeps serving and ingesting.
    loop = QueryLoop(env).start()
    policy = policy_from(s, max_tokens=64, overlap_tokens=8)
    build = await start_build(s, env.registry, policy=policy, embedder=env.embedder, tokenizer=HFTokenizer())
    cand = build.record.name
    async with DocumentPublisher(s) as pub:
        await pub.upsert(
            "globex",
            "late.md",
            content=b"# Late\n\nThe lighthouse rotation code for globex is QUARTZ-7777.",
            mime_type="text/markdown",
            acl=Acl(groups=("everyone",)),
        )
        await pub.delete("globex", "facilities.md")
    try:
        ready = await build.wait_ready(timeout_s=120)
        during = await loop.stop()
        assert ready.ready and ready.counters.upserts >= 11
        assert len(during) >= len(QUESTIONS)
        for _, key, a in during:
            assert a.ok and a.generation == "g0001" and a.chunks == base[key].chunks, (
                "live changed during the build"
            )

        record = env.registry.record(cand)
        assert record.spec.policy_hash == policy.policy_hash and record.spec.source is not None
        assert record.spec.parent == "g0001" and record.generation_id == record.spec.content_id()
        cstore = env.store(cand)
        assert await eventually(lambda: cstore.get_state("globex", "late.md"), timeout_s=30)
        assert cstore.get_state("globex", "facilities.md") is None
        assert {c["generation"] for c in cstore.iter_chunks("acme")} == {cand}
        assert env.registry.view().generations[cand].ready["offsets"]

        lc = Lifecycle(
            s,
            env.registry,
            Gate((f"recall:{recall_set(tmp_path)}",), recall=RecallEvaluator(env.client, env.embedder)),
        )
        outcomes = await lc.evaluate(cand)
        assert outcomes[0].passed, outcomes[0]
        assert env.registry.view().generations[cand].evals[-1]["passed"] is True

        # Canary: half of the users (stable per user) are served from the candidate.
        await lc.canary(cand, 0.5)
        await asyncio.sleep(0.5)
        users = [f"user{i}" for i in range(10)]
        q = question("payroll", "archive")
        first = {u: (await env.query.ask_gen("globex", u, q)).generation for u in users}
        again = {u: (await env.query.ask_gen("globex", u, q)).generation for u in users}
        expected = {u: cand if stable_share("globex", u) < 0.5 else "g0001" for u in users}
        assert first == again == expected and set(first.values()) == {"g0001", cand}
        report = await signals.report(s, since_s=600)
        assert report["generations"][cand]["queries"] >= 1 and report["generations"]["g0001"]["queries"] >= 1
        await lc.canary_off()

        # Tenant by tenant: acme moves, globex stays; then acme back in one step.
        await lc.promote(cand, tenant="acme")
        await asyncio.sleep(0.5)
        assert (await env.query.ask_gen("acme", "alice", q)).generation == cand
        assert (await env.query.ask_gen("globex", "gina", q)).generation == "g0001"
        await lc.rollback(tenant="acme")
        await asyncio.sleep(0.5)
        assert (await env.query.ask_gen("acme", "alice", q)).generation == "g0001"

        # Everyone: the alias moves under a query loop; no error, no empty result.
        before = await env.answers()
        loop = QueryLoop(env).start()
        await asyncio.sleep(1.0)
        switch_at = time.monotonic()
        out = await lc.promote(cand)
        assert out["passed"] and out["from"] == "g0001"
        await asyncio.sleep(1.5)
        switched = await loop.stop()
        assert all(a.ok for _, _, a in switched), [a for _, _, a in switched if not a.ok]
        assert all(a.generation == a.answer_generation for _, _, a in switched), (
            "every answer names its generation"
        )
        assert {a.generation for t, _, a in switched if t < switch_at} == {"g0001"}
        assert [a.generation for _, _, a in switched][-1] == cand
        after = await env.answers()
        assert all(a.generation == cand for a in after.values())
        late = await env.query.ask_gen("globex", "gina", "What is the lighthouse rotation code?")
        assert late.generation == cand and "QUARTZ-7777" in late.answer
        gone = await env.query.ask_gen("globex", "gina", question("facilities", "archive"))
        assert gone.generation == cand and code("globex", "facilities", "archive") not in gone.answer
        cands = env.store(cand)
        assert not cands.chunk_ids_of("globex", "facilities.md") and cands.chunk_ids_of("globex", "late.md")

        # One step back: exactly the previous generation's results.
        await lc.rollback()
        restored = await env.answers()
        assert {k: (a.generation, a.chunks) for k, a in restored.items()} == {
            k: (a.generation, a.chunks) for k, a in before.items()
        }
        view = env.registry.view()
        assert view.live == "g0001" and view.status(cand) == "previous"
    finally:
        await build.stop()


async def test_degraded_candidate_refused_by_the_eval_runner_gate(env: Env, tmp_path: Path) -> None:
    """A policy that keeps only each document's first words: evals.runner's recall threshold refuses it."""
    s = env.s
    policy = policy_from(s, max_tokens=16, max_chunks_per_document=1)
    build = await start_build(s, env.registry, policy=policy, embedder=env.embedder, tokenizer=HFTokenizer())
    try:
        assert (await build.wait_ready(timeout_s=120)).ready
    finally:
        await build.stop()
    cand = build.record.name
    set_path = tmp_path / "gate.yaml"
    lines = [
        "name: generation-gate",
        "defaults: {tenant: acme, user: eval-alice, groups: [everyone], top_k: 5}",
        "thresholds: {recall_at_5: '>= 0.8', chunk_recall_at_10: '>= 0.8', answer_fact_recall: '>= 0.8'}",
        "questions:",
    ]
    for topic, noun in [(t, n) for t in TOPICS[:4] for n in ("archive", "escalation")]:
        fact = code("acme", topic, noun)
        lines += [
            f"  - id: {topic}-{noun}",
            f"    question: '{question(topic, noun)}'",
            f"    expected_docs: [{topic}.md]",
            f"    expected_chunks: [{{document: {topic}.md, contains: '{fact}'}}]",
            f"    expected_facts: ['{fact}']",
        ]
    set_path.write_text("\n".join(lines) + "\n")
    lc = Lifecycle(s, env.registry, Gate((str(set_path),), runner=runner_evaluator))

    with pytest.raises(PromotionRefusedError) as refused:
        await lc.promote(cand)
    outcome = refused.value.outcomes[0]
    assert outcome.evaluator == "evals.runner" and not outcome.passed
    assert outcome.metrics["chunk_recall_at_10"] < 0.8 and outcome.metrics["answer_fact_recall"] < 0.8
    view = env.registry.view()
    assert view.live == "g0001" and view.status(cand) == "refused"
    assert [e["kind"] for e in view.generations[cand].evals] == ["evaluated", "refused"]
    assert env.registry.alias_target() == names.chunks_collection(s.index, "g0001")
    # The same gate passes the live generation's content: the refusal is about the candidate.
    live_outcome = (await Gate((str(set_path),), runner=runner_evaluator).run(s, "g0001"))[0]
    assert live_outcome.passed, live_outcome.metrics
    a = await env.query.ask_gen("acme", "alice", question("travel", "escalation"))
    assert a.ok and a.generation == "g0001"
    listed = await asyncio.to_thread(cli, s, "generation", "list", "--json")
    statuses = {g["name"]: g["status"] for g in listed["generations"]}
    assert listed["live"] == "g0001" and statuses == {"g0001": "live", cand: "refused"}


def cli(s: Settings, *args: str) -> dict[str, Any]:
    """`ragstream ...` in a subprocess against this test's index family; the last stdout line as JSON."""
    env = dict(os.environ)
    env.update(
        {
            "RAGSTREAM_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
            "RAGSTREAM_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
            "RAGSTREAM_WEAVIATE__URL": s.weaviate.url,
            "RAGSTREAM_WEAVIATE__GRPC_PORT": str(s.weaviate.grpc_port),
            "RAGSTREAM_WEAVIATE__API_KEY": s.weaviate.api_key.get_secret_value(),
            "RAGSTREAM_INDEX__GENERATION": s.index.generation,
            "RAGSTREAM_INDEX__CHUNKS_COLLECTION_PREFIX": s.index.chunks_collection_prefix,
            "RAGSTREAM_INDEX__DOCUMENTS_COLLECTION": s.index.documents_collection,
            "RAGSTREAM_GENERATIONS__REGISTRY_COLLECTION": s.generations.registry_collection,
        }
    )
    r = subprocess.run(
        [sys.executable, "-m", "application.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def faq_files() -> list[Path]:
    """Nine of the Debian FAQ's HTML chapters (about 170 chunks): real text, a build of about 30 s."""
    return sorted(Path("/usr/share/doc/debian/FAQ").glob("*.en.html"))[::2]


async def test_plan_for_a_model_change_matches_the_real_build(
    settings: Settings, unique: str, embedder: Any
) -> None:
    """Live on the bag-of-words embedder; plan, then build, with the real MiniLM model over the same topic.

    Only the source topic matters here (plan and builder both replay it), so no live pipeline runs.
    """
    s = gen_settings(settings, unique)
    s = s.model_copy(update={"generations": s.generations.model_copy(update={"plan_sample_chunks": 64})})
    files = faq_files()
    if not files:
        pytest.fail("debian-faq must be installed (scripts/bootstrap.sh does it)")
    async with Env(s, HashEmbedder(), consumers=()) as e:
        async with DocumentPublisher(s) as pub:
            for i, f in enumerate(files):
                tenant = ("acme", "globex")[i % 2]
                await pub.upsert(
                    tenant,
                    f.name,
                    content=f.read_bytes(),
                    mime_type="text/html",
                    acl=Acl(groups=("everyone",)),
                )
        tokenizer = HFTokenizer()
        policy = policy_from(s)
        planned = (await plan_rebuild(s, policy, tokenizer, embedder)).to_json()
        assert planned["embedding_model"] == embedder.model_id and set(planned["tenants"]) == {
            "acme",
            "globex",
        }
        assert planned["documents"] == len(files) and planned["estimated_cost"] == 0.0

        started = time.perf_counter()
        build = await start_build(
            s, e.registry, policy=policy, embedder=embedder, tokenizer=tokenizer, live_embedder=HashEmbedder()
        )
        try:
            result = await build.wait_ready(timeout_s=400)
        finally:
            await build.stop()
        real_s = time.perf_counter() - started
        assert result.ready
        embed_real_s = real_s - planned["estimated_seconds_parts"]["startup"]
        figures = {
            "planned_tokens": planned["tokens_to_embed"],
            "real_tokens": result.counters.tokens,
            "planned_chunks": planned["chunks_to_embed"],
            "real_chunks": result.counters.chunks,
            "planned_s": planned["estimated_seconds"],
            "real_s": round(real_s, 2),
            "parts": planned["estimated_seconds_parts"],
            "tokens_per_s": planned["throughput_tokens_per_s"],
            "planned_embed_cpu_s": planned["estimated_embed_cpu_seconds"],
            "real_cpu_s": round(result.cpu_seconds, 2),
            # wall / CPU time: how much of the CPU this process got (others' load on a shared machine)
            "plan_wall_per_cpu": round(
                planned["throughput_sample"]["seconds"] / planned["throughput_sample"]["cpu_seconds"], 3
            ),
            "build_wall_per_cpu": round(embed_real_s / result.cpu_seconds, 3),
            "build_embed_s": round(result.counters.embed_s, 2),
            "build_embed_cpu_s": round(result.counters.embed_cpu_s, 2),
        }
        print("plan-vs-build", json.dumps(figures))
        assert abs(planned["tokens_to_embed"] - result.counters.tokens) <= 0.25 * result.counters.tokens, (
            figures
        )
        assert abs(planned["chunks_to_embed"] - result.counters.chunks) <= 0.25 * result.counters.chunks, (
            figures
        )
        assert (
            abs(planned["estimated_embed_cpu_seconds"] - result.cpu_seconds) <= 0.25 * result.cpu_seconds
        ), figures
        load_changed = abs(figures["plan_wall_per_cpu"] / figures["build_wall_per_cpu"] - 1) > 0.25
        if not load_changed:  # same share of the machine: the wall-time estimate must hold
            assert abs(planned["estimated_seconds"] - real_s) <= 0.25 * real_s, figures
        else:  # other processes took a different share of the CPUs between plan and build: report it
            print(
                "plan-vs-build: the machine's load changed between plan and build; wall time not comparable"
            )
        per_tenant = planned["tenants"]
        assert sum(t["documents"] for t in per_tenant.values()) == len(files)
        cand = e.store(build.record.name)
        assert sum(cand.count(t) for t in ("acme", "globex")) == planned["chunks"]
