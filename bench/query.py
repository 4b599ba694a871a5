"""Query benchmark on the running local stack (`ragstream stack up`).

1. Event-path overhead (extractive stub generator, so the model is not measured): for each question, the
   same stages called in-process (retrieve -> rerank -> generate, no Kafka) and the event path (publish
   QueryRequested -> retrieval, rerank, generation consumers -> QueryAnswered seen by the gateway's
   AnswerHub). Overhead = event - in-process, paired per question (in-process once before and once after
   the event path, averaged); p50/p95. Target p95 <= 25 ms. Also `transport`: event total minus the stage
   times the workers measured for that same query (no second sample, so no stage noise in it).
   `--topology processes` (default) runs the retrieval, rerank and generation consumers each in its own
   process, as their Deployments run; `one-process` hosts them all in this process's event loop.
   Also the full HTTP path (POST /v1/answer through an in-process gateway) for reference.
2. Time to first token with the local model server (when it answers at `llm.base_url`): a serving pipeline
   with the OpenAI-compatible client, questions streamed through the gateway (SSE); client-side TTFT and
   the generation worker's own first-token time.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
import uuid
from datetime import timedelta
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx

from application.compose import MODULES, run_worker, wire
from application.pipeline import INGESTION, SERVING, LocalPipeline
from bench.common import cleanup, isolated_settings, quantile_fields
from gateway.app import create_app
from gateway.auth import Principal, mint_token
from gateway.backpressure import KafkaLagProbe
from gateway.client import GatewayClient
from gateway.hub import KafkaAnswerHub
from gateway.server import serve_in_process
from producers.folder_publish import publish_folder
from ragstream.adapters.embedder import SentenceTransformerEmbedder
from ragstream.adapters.llm import ExtractiveStub
from ragstream.runtime.deps import Deps
from ragstream.runtime.kafka_admin import desired_topics, ensure_topics, group_id
from ragstream.runtime.worker import Outbound, Producer
from ragstream.settings import Settings
from schemas.envelope import utcnow
from schemas.ingestion import Acl
from schemas.serving import QueryAnswered, QueryRequested, QuerySpec
from schemas.topics import CONSUMERS, QUERIES_REQUESTED, output_compression

CORPUS = Path(__file__).resolve().parents[1] / "samples" / "demo-corpus"
TENANT = "bench"
USER = Principal(tenant_id=TENANT, subject="bench-user", groups=("everyone",))
QUESTIONS = [
    "How does Weaviate keep one tenant's data away from another tenant?",
    "What happens when a consumer joins a Kafka consumer group?",
    "How are partitions assigned to consumers in a group?",
    "What does multi-tenancy mean in Weaviate?",
    "How should retrieval quality be evaluated in a RAG system?",
    "What is groundedness in RAG evaluation?",
    "Can a tenant be deactivated in Weaviate?",
    "What is consumer lag?",
]


def _request(question: str, request_class: str = "interactive", top_k: int = 8) -> QueryRequested:
    spec = QuerySpec(
        query_id=str(uuid.uuid4()),
        question=question,
        caller=USER.caller(),
        request_class=request_class,  # type: ignore[arg-type]
        top_k=top_k,
        deadline_at=utcnow() + timedelta(seconds=60),
    )
    return QueryRequested(tenant_id=TENANT, query=spec, producer="bench")


async def _no_send(_items: list[Outbound]) -> None:
    return None


async def in_process(c: dict[str, Any], ev: QueryRequested) -> float:
    """The three stages called directly, as their handlers call them, without Kafka (ms)."""
    t0 = time.perf_counter()
    retrieved = await asyncio.to_thread(c["retrieval"].retrieve, ev)
    reranked = await asyncio.to_thread(c["rerank"].rerank, retrieved)
    final = await c["generation"].answer(reranked, _no_send)
    assert isinstance(final, QueryAnswered)
    return (time.perf_counter() - t0) * 1000


STAGES = ("retrieval", "rerank", "prompt", "generation")


async def event_path(
    producer: Producer, hub: KafkaAnswerHub, ev: QueryRequested, deadline_s: int = 60
) -> dict[str, float]:
    """Publish QueryRequested, wait until the hub holds its final: total, stage sum, streaming tail (ms)."""
    qid = ev.query.query_id
    hub.register(qid, USER, "interactive", deadline_s)
    t0 = time.perf_counter()
    await producer.send(QUERIES_REQUESTED.name, ev, qid.encode())
    rec = hub.records[qid]
    final = await hub.wait(rec)
    total = (time.perf_counter() - t0) * 1000
    assert isinstance(final, QueryAnswered), f"event path failed: {final}"
    assert rec.finished_at is not None and rec.first_delta_at is not None
    return {
        "total": total,
        "stages": sum(final.timings_ms.get(k, 0.0) for k in STAGES),
        "tail": (rec.finished_at - rec.first_delta_at) * 1000,
    }


async def overhead(s: Settings, stages: dict[str, Any], n: int, warmup: int) -> dict[str, Any]:
    producer = Producer(s, QUERIES_REQUESTED.compression)
    hub = KafkaAnswerHub(s)
    await producer.start()
    await hub.start()
    # Serving: the first answer also waits for the workers to start and join their groups.
    await event_path(producer, hub, _request(QUESTIONS[0]), deadline_s=300)
    inproc: list[float] = []
    events: list[float] = []
    diffs: list[float] = []
    transport: list[float] = []
    tails: list[float] = []
    try:
        for i in range(warmup + n):
            q = QUESTIONS[i % len(QUESTIONS)]
            # In-process before and after (A-B-A): the baseline is their mean, so a slow or fast stage
            # call on one side weighs half, and drift over the run cancels.
            a1 = await in_process(stages, _request(q))
            b = await event_path(producer, hub, _request(q))
            a2 = await in_process(stages, _request(q))
            a = (a1 + a2) / 2
            if i >= warmup:
                inproc.append(a)
                events.append(b["total"])
                diffs.append(b["total"] - a)
                transport.append(b["total"] - b["stages"])
                tails.append(b["tail"])
    finally:
        await hub.stop()
        await producer.stop()
    return {
        "queries": n,
        **quantile_fields("in_process", inproc),
        **quantile_fields("event_path", events),
        **quantile_fields("overhead", diffs),
        # Where it goes: event total minus the stage times the workers themselves report (Kafka hops,
        # polling, commits), and first streamed delta -> final at the hub (delta sends, one by one).
        **quantile_fields("transport", transport),
        **quantile_fields("stream_tail", tails, qs=(50,)),
    }


async def http_path(s: Settings, n: int, suffix: str) -> dict[str, Any]:
    """POST /v1/answer through an in-process gateway (uvicorn on loopback)."""
    token = mint_token(s.auth, TENANT, USER.subject)
    lat: list[float] = []
    async with (
        serve_in_process(create_app(s, lag_probe=KafkaLagProbe(s, group_suffix=suffix))) as url,
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c,
    ):
        for i in range(n + 3):
            t0 = time.perf_counter()
            r = await c.post("/v1/answer", json={"question": QUESTIONS[i % len(QUESTIONS)]})
            r.raise_for_status()
            if i >= 3:
                lat.append((time.perf_counter() - t0) * 1000)
    return quantile_fields("http_answer", lat)


def llm_up(s: Settings) -> bool:
    try:
        return httpx.get(s.llm.base_url.rstrip("/") + "/models", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


async def ttft(s: Settings, embedder: SentenceTransformerEmbedder, n: int, suffix: str) -> dict[str, Any]:
    """Streamed through the gateway with the real model: its own topics, the same index generation."""
    tag = uuid.uuid4().hex[:6]
    s2 = s.model_copy(
        update={"kafka": s.kafka.model_copy(update={"topic_prefix": s.kafka.topic_prefix + f"ttft{tag}."})}
    )
    await ensure_topics(s2.kafka, desired_topics(s2.kafka))
    client_ttft: list[float] = []
    worker_ttft: list[float] = []
    total: list[float] = []
    failed: list[str] = []
    abstained = 0
    pipeline = await LocalPipeline(s2, SERVING, Deps(s2, embedder=embedder), group_suffix=suffix).start()
    try:
        token = mint_token(s2.auth, TENANT, USER.subject)
        app = create_app(s2, lag_probe=KafkaLagProbe(s2, group_suffix=suffix))
        async with serve_in_process(app) as url, GatewayClient(url, token) as gw:
            for i in range(n):
                r = await gw.ask(QUESTIONS[i % len(QUESTIONS)], request_class="batch")
                if r.final_event != "answer" or "client_first_delta" not in r.timings_ms:
                    failed.append(f"{r.final_event}: {r.final}"[:300])
                    continue
                abstained += bool(r.final.get("abstained"))
                client_ttft.append(r.timings_ms["client_first_delta"])
                total.append(r.timings_ms["client_total"])
                if "first_token" in r.final.get("timings_ms", {}):
                    worker_ttft.append(r.final["timings_ms"]["first_token"])
    finally:
        await pipeline.stop()
    return {
        "model": s.llm.model,
        "ttft_queries": len(client_ttft),
        **quantile_fields("ttft_gateway", client_ttft, digits=1, qs=(50,)),
        "ttft_gateway_max_ms": round(max(client_ttft, default=float("nan")), 1),
        **quantile_fields("ttft_model", worker_ttft, digits=1, qs=(50,)),
        **quantile_fields("answer_total", total, digits=1, qs=(50,)),
        "ttft_abstained": abstained,
        "ttft_failed": failed,
    }


def _serve(name: str, s: Settings, suffix: str) -> None:
    """One serving consumer in its own process, as its Deployment runs it (stub generator)."""
    deps = Deps(s, llm=ExtractiveStub())
    asyncio.run(run_worker(name, s, group=group_id(s.kafka, name, suffix), deps=deps))


def _start_processes(s: Settings, suffix: str) -> list[BaseProcess]:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_serve, args=(n, s, suffix), name=f"bench-{n}", daemon=True) for n in SERVING]
    for p in procs:
        p.start()
    return procs


def _stop_processes(procs: list[BaseProcess]) -> None:
    for p in procs:
        p.terminate()  # SIGTERM: the worker finishes its batch and leaves its group
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()


def _stages(deps: Deps) -> dict[str, Any]:
    """The serving stages built in this process, for the in-process side of the comparison."""
    out = {}
    for name in SERVING:
        producer = Producer(deps.settings, output_compression(CONSUMERS[name]))
        out[name] = MODULES[name].component(wire(name, deps, producer).deps)
    return out


async def run(n: int, warmup: int, http_n: int, ttft_n: int, topology: str) -> dict[str, Any]:
    s = isolated_settings()
    await ensure_topics(s.kafka, desired_topics(s.kafka))
    embedder = SentenceTransformerEmbedder(s.embedding, s.index.embedding_batch_size)
    deps = Deps(s, embedder=embedder, llm=ExtractiveStub())
    result: dict[str, Any] = {"topology": topology}
    # Own consumer groups: shared group ids would rebalance whenever another process joins or leaves them.
    suffix = "." + s.kafka.topic_prefix.rstrip(".")
    procs: list[BaseProcess] = []
    in_loop = INGESTION + SERVING if topology == "one-process" else INGESTION
    pipeline = await LocalPipeline(s, in_loop, deps, group_suffix=suffix).start()
    try:
        if topology == "one-process":
            stages = pipeline.components
        else:  # as deployed: each serving consumer its own process; this one publishes and measures
            stages = _stages(deps)
            procs = _start_processes(s, suffix)
        state = Path(f"/tmp/ragstream-bench-{uuid.uuid4().hex[:8]}")
        pub = await publish_folder(
            s, CORPUS, TENANT, Acl(groups=("everyone",)), wait=True, timeout_s=300, state_dir=state
        )
        result["corpus"] = pub
        result.update(await overhead(s, stages, n, warmup))
        if http_n:
            result.update(await http_path(s, http_n, suffix))
    finally:
        await pipeline.stop()
        _stop_processes(procs)
    try:
        if ttft_n and llm_up(s):
            result.update(await ttft(s, embedder, ttft_n, suffix + ".ttft"))
        else:
            result["ttft"] = f"skipped: no model server at {s.llm.base_url}" if ttft_n else "skipped"
    finally:
        await cleanup(s)
    result["targets"] = {"overhead_p95_ms": 25.0}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--http-queries", type=int, default=20)
    ap.add_argument("--ttft-queries", type=int, default=3)
    ap.add_argument(
        "--topology",
        choices=("processes", "one-process"),
        default="processes",
        help="serving consumers as separate processes (as deployed) or all in this process",
    )
    args = ap.parse_args()
    result = asyncio.run(run(args.queries, args.warmup, args.http_queries, args.ttft_queries, args.topology))
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
