"""Scaling benchmark on the running local stack (`ragstream stack up`): real lag on the real broker, the
replica counts KEDA's kafka scaler would compute from it, next to what one replica measurably drains.

For each consumer, in pipeline order, on a per-run topic prefix with the chart's partition count:
1. the backlog is already on its input topic (documents published for the normalizer; every later stage's
   input is the previous stage's output), so its consumer group starts with real lag;
2. one replica of the real worker (`ragstream.runtime.worker.Worker` with the production handler, as
   `ragstream worker NAME` runs it) consumes it, while the group's lag is sampled from the broker (committed
   offsets vs log-end offsets) every `--sample-s`;
3. each lag sample goes through KEDA's formula with the thresholds in deploy/helm/ragstream/values.yaml.

KEDA's kafka scaler (keda.sh/docs/2.17/scalers/apache-kafka; concepts/scaling-deployments, "Activating and
Scaling thresholds"): the metric is the group's total lag over the topic's partitions (a partition without a
committed offset counts its log-end offset under offsetResetPolicy=earliest); the HPA it feeds targets
`lagThreshold` per replica (AverageValue), so desired = ceil(totalLag / lagThreshold); the scaler caps it at
the topic's partitions (allowIdleConsumers=false) and the ScaledObject at maxReplicaCount, floor
minReplicaCount; with minReplicaCount 0 the workload is active only while totalLag > activationLagThreshold.

Reported per consumer: one-replica throughput (records/s, after its start-up and group join), the backlog one
replica carries at the target (lagThreshold / throughput, seconds), the replica timeline, and the drain time
KEDA's replica count would give if throughput scales with replicas (an estimate, said so). Last line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from application.compose import wire
from bench.common import cleanup, isolated_settings
from producers.publisher import DocumentPublisher
from ragstream.runtime.deps import Deps
from ragstream.runtime.kafka_admin import desired_topics, ensure_topics
from ragstream.runtime.offsets import LagReader
from ragstream.runtime.worker import Producer, Worker
from ragstream.settings import Settings
from schemas.ingestion import Acl
from schemas.serving import Caller, QueryRequested, QuerySpec
from schemas.topics import CONSUMERS, QUERIES_REQUESTED, output_compression

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "helm" / "ragstream" / "values.yaml"
FAQ_TXT = Path("/usr/share/doc/debian/FAQ/debian-faq.en.txt.gz")
KEDA_DOCS = [
    "https://keda.sh/docs/2.17/scalers/apache-kafka/",
    "https://keda.sh/docs/2.17/concepts/scaling-deployments/#activating-and-scaling-thresholds",
    "https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#algorithm-details",
]


# --- KEDA's arithmetic --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scaling:
    lag_threshold: int
    activation_lag_threshold: int
    min_replicas: int
    max_replicas: int
    partitions: int
    polling_interval_s: int
    cooldown_s: int

    def replicas(self, total_lag: int) -> int:
        """Replicas KEDA + the HPA converge to for this total lag (before HPA tolerance and stabilization)."""
        if self.min_replicas == 0 and total_lag <= self.activation_lag_threshold:
            return 0  # not active: scaled to (or kept at) zero
        desired = math.ceil(max(total_lag, 0) / self.lag_threshold)
        desired = min(desired, self.partitions, self.max_replicas)
        return max(desired, self.min_replicas, 1)


def chart_scaling() -> dict[str, Scaling]:
    values = yaml.safe_load(VALUES.read_text())
    defaults = values["workerDefaults"]
    partitions = {t["name"]: int(t["partitions"]) for t in values["topics"]["list"]}
    out = {}
    for name, w in values["workers"].items():
        out[name] = Scaling(
            lag_threshold=int(w["lagThreshold"]),
            activation_lag_threshold=int(w["activationLagThreshold"]),
            min_replicas=int(w["minReplicaCount"]),
            max_replicas=int(w["maxReplicaCount"]),
            partitions=partitions[w["topic"]],
            polling_interval_s=int(w.get("pollingInterval", defaults["pollingInterval"])),
            cooldown_s=int(w.get("cooldownPeriod", defaults["cooldownPeriod"])),
        )
    return out


# --- lag from the broker ------------------------------------------------------------------------------------


class LagProbe:
    """A consumer group's total lag on one topic, as KEDA's scaler reads it (earliest reset policy: a
    partition without a commit counts from offset zero)."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._reader = LagReader(settings.kafka)

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()

    async def lag(self, group: str, topic: str) -> int:
        return await self._reader.lag(group, self.s.kafka.topic_prefix + topic, uncommitted="zero")


# --- one stage ----------------------------------------------------------------------------------------------


@dataclass
class StageResult:
    name: str
    scaling: Scaling
    build_s: float = 0.0
    join_s: float = 0.0
    initial_lag: int = 0
    final_lag: int = 0
    drained: int = 0
    drained_in_window: int = 0
    drain_window_s: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    note: str = ""

    @property
    def throughput(self) -> float:
        return self.drained_in_window / self.drain_window_s if self.drain_window_s > 0 else 0.0

    def report(self) -> dict[str, Any]:
        sc = self.scaling
        tput = self.throughput
        series = [(round(t, 1), lag, sc.replicas(lag)) for t, lag in self.samples]
        # What KEDA sees: one reading per pollingInterval (the first at t=0, when the backlog is there).
        seen: dict[int, tuple[float, int, int]] = {}
        for point in series:
            seen.setdefault(int(point[0] // sc.polling_interval_s), point)
        keda_polls = list(seen.values())
        peak = sc.replicas(self.initial_lag)
        est = self.initial_lag / (peak * tput) if tput and tput == tput and peak else float("nan")
        return {
            "chart": {
                "lagThreshold": sc.lag_threshold,
                "activationLagThreshold": sc.activation_lag_threshold,
                "minReplicaCount": sc.min_replicas,
                "maxReplicaCount": sc.max_replicas,
                "partitions": sc.partitions,
                "pollingInterval": sc.polling_interval_s,
            },
            "initial_lag": self.initial_lag,
            "final_lag": self.final_lag,
            "drained": self.drained,
            "drained_in_window": self.drained_in_window,
            "build_s": round(self.build_s, 2),
            "group_join_s": round(self.join_s, 2),
            "drain_window_s": round(self.drain_window_s, 2),
            "one_replica_records_per_s": round(tput, 3),
            "seconds_of_backlog_per_replica_at_target": round(sc.lag_threshold / tput, 2) if tput else None,
            "keda_replicas_at_initial_lag": peak,
            "keda_replicas_max_seen": max((r for _, _, r in series), default=0),
            "drain_s_one_replica": round(self.initial_lag / tput, 1) if tput else None,
            "drain_s_at_keda_replicas_estimate": round(est, 1) if est == est else None,
            "keda_polls": keda_polls,
            "timeline": _thin(series, 24),
            **({"note": self.note} if self.note else {}),
        }


def _thin(series: list[tuple[float, int, int]], n: int) -> list[tuple[float, int, int]]:
    if len(series) <= n:
        return series
    step = (len(series) - 1) / (n - 1)
    return [series[round(i * step)] for i in range(n)]


async def run_stage(
    name: str,
    settings: Settings,
    scaling: Scaling,
    probe: LagProbe,
    *,
    budget_s: float,
    sample_s: float,
    deps: Deps,
    max_batch: int,
) -> StageResult:
    spec = CONSUMERS[name]
    group = f"{spec.group}.{settings.kafka.topic_prefix.rstrip('.')}"  # never join a shared group
    res = StageResult(name, scaling)
    t = time.perf_counter()
    producer = Producer(settings, output_compression(spec))
    wired = await asyncio.to_thread(wire, name, replace(deps, settings=settings), producer)
    worker = Worker(spec, wired.handler, settings, group=group, max_batch=max_batch, producer=producer)
    res.build_s = time.perf_counter() - t
    res.initial_lag = await probe.lag(group, spec.topic)
    t0 = time.monotonic()
    res.samples.append((0.0, res.initial_lag))
    await worker.start()
    task = asyncio.create_task(worker.run())
    joined_at: float | None = None
    progress: list[tuple[float, int]] = []  # (t, records committed) at each change, polled every 50 ms
    lag = res.initial_lag
    next_probe = sample_s
    try:
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic() - t0
            if joined_at is None and worker.consumer.assignment():
                joined_at = now
            if worker.processed and (not progress or progress[-1][1] != worker.processed):
                progress.append((now, worker.processed))
            if task.done():
                task.result()
                break
            if now >= next_probe:
                next_probe += sample_s
                lag = await probe.lag(group, spec.topic)
                res.samples.append((now, lag))
                if lag == 0 or now > budget_s:
                    break
    finally:
        worker._stopping.set()  # finish the batch in hand, then stop (no half-written batch)
        deadline = time.monotonic() + 90
        while not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if worker.processed and (not progress or progress[-1][1] != worker.processed):
                progress.append((time.monotonic() - t0, worker.processed))
        await worker.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        wired.close()
    res.join_s = joined_at if joined_at is not None else res.samples[-1][0]
    res.final_lag = lag
    res.drained = worker.processed
    # Throughput between the first and the last committed batch (start-up and the first batch excluded);
    # with a single batch, from the group join to that batch.
    if len(progress) >= 2:
        res.drain_window_s = progress[-1][0] - progress[0][0]
        res.drained_in_window = progress[-1][1] - progress[0][1]
    elif progress:
        res.drain_window_s = progress[0][0] - res.join_s
        res.drained_in_window = progress[0][1]
    if lag:
        res.note = (
            f"stopped after the {budget_s:.0f} s budget with lag {lag}; throughput from what it drained"
        )
    return res


# --- inputs -------------------------------------------------------------------------------------------------


def sections(limit: int) -> list[tuple[str, str]]:
    """(title, text) sections of the Debian FAQ (plain text), about 1-3 kB each."""
    text = gzip.decompress(FAQ_TXT.read_bytes()).decode("utf-8", "replace")
    parts = re.split(r"\n(?=\d+\.\d+\.?\s[^\n]+\n)", text)
    out = []
    for p in parts[1:]:  # parts[0]: front matter and contents
        p = p.strip()
        if len(p) < 400:
            continue
        title = p.splitlines()[0].strip()
        out.append((title, p[:3000]))
    while len(out) < limit:  # repeat with new ids: the same text is still a new document version
        out += out[: limit - len(out)]
    return out[:limit]


async def publish_documents(settings: Settings, tenant: str, docs: list[tuple[str, str]]) -> None:
    async with DocumentPublisher(settings) as pub:
        for i, (title, text) in enumerate(docs):
            await pub.upsert(
                tenant,
                f"faq-{i:04d}",
                content=text.encode(),
                mime_type="text/plain",
                acl=Acl(groups=("everyone",)),
                title=title,
            )


async def publish_queries(settings: Settings, tenant: str, docs: list[tuple[str, str]], n: int) -> None:
    producer = Producer(settings, QUERIES_REQUESTED.compression)
    await producer.start()
    try:
        now = datetime.now(UTC)
        events = []
        for i in range(n):
            title = docs[i % len(docs)][0]
            question = re.sub(r"^\d+(\.\d+)*\.?\s*", "", title).rstrip("?") + "?"
            spec = QuerySpec(
                query_id=str(uuid.uuid4()),
                question=question,
                caller=Caller(subject="bench", groups=("everyone",), auth_method="internal"),
                request_class="interactive",
                deadline_at=now + timedelta(hours=1),
                requested_at=now,
            )
            events.append(QueryRequested(tenant_id=tenant, query=spec, producer="bench"))
        from ragstream.runtime.worker import Outbound, event_key

        spec0 = CONSUMERS["retrieval"]
        await producer.send_many([Outbound(spec0.topic, event_key(e), e) for e in events])
    finally:
        await producer.stop()


async def model_server_up(settings: Settings) -> bool:
    try:
        async with httpx.AsyncClient(timeout=3.0) as c:
            r = await c.get(settings.llm.base_url.rstrip("/") + "/models")
            return r.status_code == 200
    except httpx.HTTPError:
        return False


# --- the run ------------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    scaling = chart_scaling()
    partitions = max(s.partitions for s in scaling.values())
    s = isolated_settings(partitions=partitions)
    await ensure_topics(s.kafka, desired_topics(s.kafka))
    tenant = "bench-scaling"
    docs = sections(args.documents)
    probe = LagProbe(s)
    await probe.start()
    results: dict[str, StageResult] = {}
    skipped: dict[str, str] = {}
    from ragstream.adapters.embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(s.embedding, s.index.embedding_batch_size)
    shared = Deps(s, embedder=embedder)
    t_all = time.perf_counter()
    try:
        await publish_documents(s, tenant, docs)
        for name in ("normalizer", "chunker", "embedder"):
            results[name] = await run_stage(
                name,
                s,
                scaling[name],
                probe,
                budget_s=args.stage_budget_s,
                sample_s=args.sample_s,
                deps=shared,
                max_batch=s.index.consumer_batch_max,
            )
        await publish_queries(s, tenant, docs, args.queries)
        for name in ("retrieval", "rerank"):
            results[name] = await run_stage(
                name,
                s,
                scaling[name],
                probe,
                budget_s=args.stage_budget_s,
                sample_s=args.sample_s,
                deps=shared,
                max_batch=s.index.consumer_batch_max,
            )
        if await model_server_up(s):
            serving = s.serving.model_copy(
                update={
                    "answer_max_tokens": args.answer_max_tokens,
                    "context_token_budget": args.context_token_budget,
                }
            )
            results["generation"] = await run_stage(
                "generation",
                s.model_copy(update={"serving": serving}),
                scaling["generation"],
                probe,
                budget_s=args.generation_budget_s,
                sample_s=args.sample_s,
                deps=Deps(s),
                max_batch=args.generation_batch,
            )
        else:
            skipped["generation"] = f"no OpenAI-compatible server at {s.llm.base_url}"
    finally:
        await probe.stop()
        await cleanup(s)
    return {
        "topic_prefix": s.kafka.topic_prefix,
        "partitions": partitions,
        "documents": len(docs),
        "queries": args.queries,
        "consumers": {name: r.report() for name, r in results.items()},
        "skipped": skipped,
        "settings": {
            "consumer_batch_max": s.index.consumer_batch_max,
            "generation_batch": args.generation_batch,
            "embedding_batch_size": s.index.embedding_batch_size,
            "rerank": s.serving.rerank,
            "llm_model": s.llm.model,
            "generation_answer_max_tokens": args.answer_max_tokens,
            "generation_context_token_budget": args.context_token_budget,
        },
        "record_units": {
            "normalizer": "source changes (documents)",
            "chunker": "normalized documents",
            "embedder": "chunked documents (one record carries all chunks of a document)",
            "retrieval": "queries",
            "rerank": "queries",
            "generation": "queries (each a full LLM answer)",
        },
        "wall_s": round(time.perf_counter() - t_all, 1),
        "keda_formula": (
            "replicas = 0 if minReplicaCount == 0 and totalLag <= activationLagThreshold, else "
            "max(minReplicaCount, min(ceil(totalLag / lagThreshold), partitions, maxReplicaCount))"
        ),
        "sources": KEDA_DOCS,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--documents", type=int, default=1200, help="source changes published (ingestion backlog)"
    )
    ap.add_argument("--queries", type=int, default=120, help="queries published (serving backlog)")
    ap.add_argument("--stage-budget-s", type=float, default=45.0, help="longest one stage may drain")
    ap.add_argument("--generation-budget-s", type=float, default=90.0, help="drain budget with the real LLM")
    ap.add_argument("--generation-batch", type=int, default=1, help="records per commit, generation stage")
    ap.add_argument("--answer-max-tokens", type=int, default=64, help="generation stage (local CPU model)")
    ap.add_argument("--context-token-budget", type=int, default=600, help="generation stage prompt context")
    ap.add_argument("--sample-s", type=float, default=0.5, help="broker lag sampling interval")
    args = ap.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
