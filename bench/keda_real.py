"""Scaling proven on a real control plane: the project's own Helm chart, the real KEDA operator, real lag.

    python -m bench.keda_real            # opt-in: never part of scripts/test.sh (first run builds ~20-60 min)

1. Obtains (once, cached in ~/.cache/ragstream/keda-real) and starts a Kubernetes control plane with KEDA
   (bench/k8s_local.py: etcd, kube-apiserver, controller-manager, scheduler, kwok, KEDA operator + metrics
   adapter), installs KEDA's CRDs, and a Kafka + Weaviate stack of its own (bench.chaos.BenchStack: a temp
   `stack.home` with its own ports, never the default stack).
2. Renders the chart with the helm the test tools fetch (deploy/tools/manifests.py) — overriding only the
   image, the broker address and `cooldownPeriod` (shortened so the scale-back fits in one run) — and applies
   its ServiceAccount and the Deployments + ScaledObjects of the consumers under test, as rendered.
3. A replica shim turns each Deployment's ready replicas (kwok pods) into `ragstream worker NAME` processes.
4. Phase `one_replica`: every ScaledObject paused at one replica (KEDA's `autoscaling.keda.sh/paused-replicas`
   annotation); a burst of documents and of retrieved queries; the drain time. Phase `keda`: annotation
   removed, the same size of burst (new documents), KEDA scales on the lag; drain; then the scale back to
   minReplicaCount through the chart's HPA behavior.
Every second, per consumer: lag (committed vs end offsets, as KEDA counts it), Deployment spec and ready
replicas, the HPA's desired replicas, KEDA's external metric value, shim processes (running / consuming).
The timeline goes to a JSONL file; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.chaos import ROOT, BenchStack, worker_env
from bench.k8s_local import Builder, ControlPlane, KubeApi, cache_dir, condition, parse_quantity, rss_mb, stop
from bench.scaling import sections
from deploy.tools import manifests
from producers.publisher import DocumentPublisher
from ragstream.runtime.kafka_admin import desired_topics, ensure_topics
from ragstream.runtime.offsets import LagReader
from ragstream.runtime.worker import Outbound, Producer, event_key
from ragstream.settings import Settings
from schemas.ingestion import Acl
from schemas.serving import Caller, Passage, QueryRetrieved, QuerySpec
from schemas.topics import CONSUMERS

NAMESPACE = "ragstream"
RELEASE = "ragstream"
TENANT = "keda-real"
PAUSE = "autoscaling.keda.sh/paused-replicas"
# The consumers under test and what feeds each (a stage is drained once it and everything upstream is at 0).
# retrieval (an embedding model per replica, minReplicaCount 2) and generation (needs the model server) are
# not applied: the box has 2 cores and ~3 GB for this suite.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "normalizer": (),
    "chunker": ("normalizer",),
    "embedder": ("normalizer", "chunker"),
    "rerank": (),
}
SERVING = ("rerank",)


def log(line: str) -> None:
    print(f"[keda-real {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# --- the chart ----------------------------------------------------------------------------------------------


def chart_overrides(bootstrap: str, cooldown_s: int, workers: Iterable[str]) -> dict[str, str]:
    """`--set` values: image and broker address, plus the cooldown (shipped 300 s / 120 s), per worker too
    because the serving workers set their own."""
    out = {
        "image.repository": "local/ragstream",
        "image.tag": "bench",
        "kafka.bootstrapServers": bootstrap,
        "workerDefaults.cooldownPeriod": str(cooldown_s),
    }
    for name in workers:
        out[f"workers.{name}.cooldownPeriod"] = str(cooldown_s)
    return out


def select(docs: Iterable[Mapping[str, Any]], consumers: Iterable[str]) -> list[dict[str, Any]]:
    """The rendered ServiceAccount, and the Deployment + ScaledObject of each consumer under test."""
    wanted = set(consumers)
    out = []
    for d in docs:
        labels = d.get("metadata", {}).get("labels", {})
        if d["kind"] == "ServiceAccount" or (
            d["kind"] in ("Deployment", "ScaledObject") and labels.get("ragstream.io/consumer") in wanted
        ):
            doc = copy.deepcopy(dict(d))
            doc["metadata"].setdefault("namespace", NAMESPACE)
            out.append(doc)
    return out


def paused(scaled_object: Mapping[str, Any], replicas: int | None) -> dict[str, Any]:
    """The ScaledObject with KEDA's pause annotation set (replicas) or absent (None: scaling on)."""
    so = copy.deepcopy(dict(scaled_object))
    notes = dict(so["metadata"].get("annotations") or {})
    notes.pop(PAUSE, None)
    if replicas is not None:
        notes[PAUSE] = str(replicas)
    so["metadata"]["annotations"] = notes
    return so


def referenced_secrets(docs: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Secret name -> keys the Deployments' containers read through non-optional secretKeyRefs. KEDA resolves
    the scale target's env when it builds the scaler: a missing Secret means no HPA at all (seen here), so the
    bench creates the Secret the chart's install steps ask for, with placeholder values."""
    found: dict[str, set[str]] = {}
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    found.setdefault(ref["name"], set()).add(ref["key"])
    return {name: sorted(keys) for name, keys in sorted(found.items())}


def placeholder_secret(name: str, keys: Iterable[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "stringData": {k: "bench-placeholder" for k in keys},
    }


@dataclass(frozen=True)
class Target:
    """What the rendered ScaledObject says about one consumer."""

    name: str
    deployment: str
    scaled_object: str
    topic: str
    group: str
    lag_threshold: int
    min_replicas: int
    max_replicas: int

    @property
    def floor(self) -> int:
        return max(self.min_replicas, 1)


def targets(applied: Iterable[Mapping[str, Any]]) -> dict[str, Target]:
    out = {}
    for d in applied:
        if d["kind"] != "ScaledObject":
            continue
        meta = d["spec"]["triggers"][0]["metadata"]
        name = d["metadata"]["labels"]["ragstream.io/consumer"]
        out[name] = Target(
            name=name,
            deployment=d["spec"]["scaleTargetRef"]["name"],
            scaled_object=d["metadata"]["name"],
            topic=meta["topic"],
            group=meta["consumerGroup"],
            lag_threshold=int(meta["lagThreshold"]),
            min_replicas=int(d["spec"]["minReplicaCount"]),
            max_replicas=int(d["spec"]["maxReplicaCount"]),
        )
    return out


# --- the timeline and what it shows -------------------------------------------------------------------------


@dataclass
class Reading:
    lag: int | None = None
    spec: int | None = None  # Deployment spec.replicas (what KEDA / the HPA asked for)
    desired: int | None = None  # HPA status.desiredReplicas (None while paused: KEDA removes the HPA)
    ready: int = 0  # Deployment status.readyReplicas (kwok pods)
    metric: float | None = None  # KEDA's external metric as the HPA reads it
    processes: int = 0  # shim: worker processes running
    consuming: int = 0  # shim: of those, joined their group


@dataclass
class Tick:
    t: float
    phase: str
    readings: dict[str, Reading] = field(default_factory=dict)


def drained_at(ticks: Sequence[Tick], name: str, upstream: Iterable[str], after: float) -> float | None:
    """First tick at/after `after` with this consumer and everything upstream at lag 0."""
    names = (name, *upstream)
    for tick in ticks:
        if tick.t >= after and all(tick.readings[n].lag == 0 for n in names):
            return tick.t
    return None


def scale_up_s(ticks: Sequence[Tick], name: str, threshold: int, floor: int) -> float | None:
    """First lag over lagThreshold -> first tick with more ready replicas than the floor."""
    over = next((t.t for t in ticks if (t.readings[name].lag or 0) > threshold), None)
    if over is None:
        return None
    up = next((t.t for t in ticks if t.t >= over and t.readings[name].ready > floor), None)
    return None if up is None else round(up - over, 1)


def scaled_back_at(ticks: Sequence[Tick], name: str, floor: int, after: float) -> float | None:
    """First tick at/after `after` (the drain) from which ready replicas stay at the floor to the end."""
    back: float | None = None
    for tick in ticks:
        if tick.t < after:
            continue
        at_floor = tick.readings[name].ready == floor
        back = (back if back is not None else tick.t) if at_floor else None
    return back


def consumer_report(
    target: Target,
    one: Sequence[Tick],
    keda: Sequence[Tick],
    starts: Mapping[str, float],
    published: Mapping[str, float],
) -> dict[str, Any]:
    """The figures for one consumer: starts/published are phase -> burst start / publish end (t)."""
    up = UPSTREAM[target.name]
    kind = "queries" if target.name in SERVING else "documents"
    drain_one = drained_at(one, target.name, up, published[f"one_replica_{kind}"])
    drain = drained_at(keda, target.name, up, published[f"keda_{kind}"])
    back = scaled_back_at(keda, target.name, target.floor, drain) if drain is not None else None
    seen = max((t.readings[target.name].ready for t in keda), default=0)
    metrics = [t.readings[target.name].metric for t in keda if t.readings[target.name].metric is not None]
    return {
        "lag_threshold": target.lag_threshold,
        "min_replicas": target.min_replicas,
        "max_replicas": target.max_replicas,
        "peak_lag": max((t.readings[target.name].lag or 0 for t in keda), default=0),
        "peak_metric": max(metrics, default=None),
        "max_replicas_seen": seen,
        "max_processes_seen": max((t.readings[target.name].processes for t in keda), default=0),
        "scale_up_s": scale_up_s(keda, target.name, target.lag_threshold, target.floor),
        "drain_s": None if drain is None else round(drain - starts[f"keda_{kind}"], 1),
        "drain_s_one_replica": None
        if drain_one is None
        else round(drain_one - starts[f"one_replica_{kind}"], 1),
        "scaled_back": back is not None,
        "scaled_back_s": None if back is None or drain is None else round(back - drain, 1),
    }


# --- the replica shim ---------------------------------------------------------------------------------------


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path


class Shim:
    """Keeps, per consumer, as many `ragstream worker NAME` processes as its Deployment has ready pods:
    new ones started in their own session, surplus ones SIGTERMed (they leave the group and exit)."""

    def __init__(self, env: Mapping[str, str], logs: Path) -> None:
        self.env = dict(env)
        self.logs = logs
        self.procs: dict[str, list[Proc]] = {}
        self.leaving: list[subprocess.Popen[bytes]] = []
        self.exits: list[str] = []
        self._n = 0

    def _start(self, name: str) -> None:
        self._n += 1
        self.logs.mkdir(parents=True, exist_ok=True)
        path = self.logs / f"worker-{name}-{self._n}.log"
        with path.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "application.cli.main", "worker", name, "--metrics-port", "0"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.setdefault(name, []).append(Proc(popen, path))

    def reconcile(self, name: str, want: int) -> None:
        procs = self.procs.setdefault(name, [])
        for p in [p for p in procs if p.popen.poll() is not None]:
            self.exits.append(f"{name} rc {p.popen.returncode} ({p.log.name})")  # a pod would restart too
            procs.remove(p)
        while len(procs) < want:
            self._start(name)
        while len(procs) > want:
            p = procs.pop()  # the newest first, as a ReplicaSet picks the youngest pod to delete
            p.popen.send_signal(signal.SIGTERM)
            self.leaving.append(p.popen)
        self.leaving = [p for p in self.leaving if p.poll() is None]

    def counts(self, name: str) -> tuple[int, int]:
        procs = self.procs.get(name, [])
        consuming = sum(f"{name} consuming ".encode() in p.log.read_bytes() for p in procs)
        return len(procs), consuming

    def pids(self) -> list[int]:
        return [p.popen.pid for ps in self.procs.values() for p in ps] + [p.pid for p in self.leaving]

    def stop(self) -> None:
        for name in list(self.procs):
            self.reconcile(name, 0)
        for popen in self.leaving:
            stop(popen, 60)


# --- the load -----------------------------------------------------------------------------------------------


async def publish_documents(s: Settings, tag: str, n: int, chars: int) -> None:
    docs = sections(n)
    async with DocumentPublisher(s, "bench.keda_real") as pub:
        for start in range(0, n, 50):
            await asyncio.gather(
                *(
                    pub.upsert(
                        TENANT,
                        f"{tag}-{i:05d}",
                        content=f"{tag} {i}. {text[:chars]}".encode(),
                        acl=Acl(groups=("everyone",)),
                        title=title,
                    )
                    for i, (title, text) in enumerate(docs[start : start + 50], start=start)
                )
            )


def retrieved(s: Settings, i: int, docs: Sequence[tuple[str, str]], passages: int) -> QueryRetrieved:
    """What retrieval would hand rerank: the question and `passages` candidate chunks."""
    now = datetime.now(UTC)
    title = docs[i % len(docs)][0]
    question = re.sub(r"^\d+(\.\d+)*\.?\s*", "", title).rstrip("?") + "?"
    spec = QuerySpec(
        query_id=str(uuid.uuid4()),
        question=question,
        caller=Caller(subject="bench", groups=("everyone",), auth_method="internal"),
        request_class="batch",
        deadline_at=now + timedelta(hours=1),
        requested_at=now,
    )
    cands = tuple(
        Passage(
            chunk_id=f"c{i}-{k}",
            document_id=f"d{(i + k) % len(docs)}",
            text=docs[(i + k) % len(docs)][1][:400],
            title=docs[(i + k) % len(docs)][0],
            acl_groups=("everyone",),
            generation=s.index.generation,
            retrieval_rank=k,
        )
        for k in range(passages)
    )
    return QueryRetrieved(
        tenant_id=TENANT, query=spec, rewritten=question, passages=cands, generation=s.index.generation
    )


async def publish_queries(s: Settings, n: int, passages: int) -> None:
    docs = sections(200)
    spec = CONSUMERS["rerank"]
    producer = Producer(s, None)
    await producer.start()
    try:
        for start in range(0, n, 200):
            events = [retrieved(s, i, docs, passages) for i in range(start, min(n, start + 200))]
            await producer.send_many([Outbound(spec.topic, event_key(e), e) for e in events])
    finally:
        await producer.stop()


# --- the run ------------------------------------------------------------------------------------------------


class Sampler:
    """Every `sample_s`: one Tick per consumer from the API, the broker and the shim; the shim reconciled
    to the ready replicas it just read."""

    def __init__(
        self, api: KubeApi, lags: LagReader, shim: Shim, tgts: Mapping[str, Target], out: Path
    ) -> None:
        self.api = api
        self.lags = lags
        self.shim = shim
        self.targets = tgts
        self.out = out.open("a")
        self.ticks: list[Tick] = []
        self.phase = "setup"
        self.t0 = time.monotonic()
        self.peak_rss_mb = 0.0
        self.other_pids: list[int] = []
        self.metric_names: dict[str, str] = {}

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def _cluster(self) -> tuple[dict[str, Any], dict[str, Any]]:
        deps = self.api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments") or {"items": []}
        hpas = self.api.get(f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers") or {
            "items": []
        }
        return (
            {d["metadata"]["name"]: d for d in deps["items"]},
            {h["spec"]["scaleTargetRef"]["name"]: h for h in hpas["items"]},
        )

    def _metric(self, t: Target, hpa: Mapping[str, Any] | None) -> float | None:
        """The value the HPA reads: KEDA's metric name from the HPA KEDA made, asked of the aggregated API."""
        if hpa is None:
            return None
        ext = hpa["spec"]["metrics"][0]["external"]["metric"]
        selector = ",".join(f"{k}={v}" for k, v in ext.get("selector", {}).get("matchLabels", {}).items())
        path = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/{ext['name']}"
        found = self.api.get(path, labelSelector=selector)
        items = (found or {}).get("items") or []
        return parse_quantity(items[0]["value"]) if items else None

    async def tick(self) -> Tick:
        deps, hpas = await asyncio.to_thread(self._cluster)
        tick = Tick(self.now(), self.phase)
        for name, t in self.targets.items():
            dep = deps.get(t.deployment, {})
            hpa = hpas.get(t.deployment)
            r = Reading(
                spec=dep.get("spec", {}).get("replicas"),
                ready=int(dep.get("status", {}).get("readyReplicas") or 0),
                desired=(hpa or {}).get("status", {}).get("desiredReplicas"),
            )
            with contextlib.suppress(Exception):  # a metric the adapter cannot give yet is None
                r.metric = await asyncio.to_thread(self._metric, t, hpa)
            with contextlib.suppress(Exception):
                r.lag = await asyncio.wait_for(self.lags.lag(t.group, t.topic), 10)
            self.shim.reconcile(name, r.ready)
            r.processes, r.consuming = self.shim.counts(name)
            tick.readings[name] = r
        self.peak_rss_mb = max(self.peak_rss_mb, rss_mb([*self.other_pids, *self.shim.pids()]))
        self.ticks.append(tick)
        self.out.write(
            json.dumps({"t": tick.t, "phase": tick.phase, **{k: asdict(v) for k, v in tick.readings.items()}})
            + "\n"
        )
        self.out.flush()
        cells = " ".join(
            f"{n}={v.lag}/{None if v.metric is None else round(v.metric)}:{v.spec}/{v.ready}/{v.consuming}"
            for n, v in tick.readings.items()
        )
        log(f"t={tick.t:6.1f} {tick.phase:11s} {cells}")
        return tick

    async def run(self, sample_s: float) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.tick()
            except Exception as exc:  # one failed sample (apiserver busy) is a gap, not the end of the run
                log(f"sample failed: {type(exc).__name__}: {exc}")
            await asyncio.sleep(max(0.0, sample_s - (time.monotonic() - started)))

    def phase_ticks(self, phase: str) -> list[Tick]:
        return [t for t in self.ticks if t.phase == phase]


async def until(sampler: Sampler, what: str, timeout_s: float, check: Any) -> bool:
    """Wait (on the sampler's ticks) until `check(last tick)`; False on timeout (the run goes on)."""
    deadline = time.monotonic() + timeout_s
    seen = len(sampler.ticks)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        if len(sampler.ticks) > seen:
            seen = len(sampler.ticks)
            if check(sampler.ticks[-1]):
                return True
    log(f"timed out after {timeout_s:.0f}s waiting for {what}")
    return False


def settled(tgts: Mapping[str, Target], replicas: Mapping[str, int]) -> Any:
    def check(tick: Tick) -> bool:
        return all(
            tick.readings[n].ready == replicas[n] and tick.readings[n].consuming == replicas[n] for n in tgts
        )

    return check


def all_drained(tgts: Mapping[str, Target]) -> Any:
    return lambda tick: all(tick.readings[n].lag == 0 for n in tgts)


async def burst(
    sampler: Sampler, s: Settings, args: argparse.Namespace, phase: str, tag: str
) -> dict[str, float]:
    """Documents and queries at once; returns burst start / publish end times by `PHASE_documents` etc."""
    sampler.phase = phase
    marks = {f"{phase}_documents": sampler.now(), f"{phase}_queries": sampler.now()}
    await asyncio.gather(
        publish_documents(s, tag, args.documents, args.doc_chars),
        publish_queries(s, args.queries, args.passages),
    )
    log(f"{phase}: published {args.documents} documents and {args.queries} retrieved queries")
    return marks | {f"{k}_published": sampler.now() for k in marks}


async def scenario(
    api: KubeApi, s: Settings, stack: BenchStack, cp: ControlPlane, args: argparse.Namespace
) -> dict[str, Any]:
    docs = manifests.documents(
        manifests.helm_template(
            set_values=chart_overrides(s.kafka.bootstrap_servers, args.cooldown_s, CONSUMERS)
        )
    )
    applied = select(docs, UPSTREAM)
    tgts = targets(applied)
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    for name, keys in referenced_secrets(applied).items():
        api.apply(placeholder_secret(name, keys), NAMESPACE)
    for d in applied:
        api.apply(d, NAMESPACE)
    log(f"applied the chart's ServiceAccount, {len(tgts)} Deployments and ScaledObjects: {', '.join(tgts)}")
    so_path = f"/apis/keda.sh/v1alpha1/namespaces/{NAMESPACE}/scaledobjects/"
    lags = LagReader(s.kafka, client_id="keda-real-lag")
    await lags.start()
    out = cache_dir() / "runs" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    shim = Shim(worker_env(s, args.embedding_backend), out / "workers")
    sampler = Sampler(api, lags, shim, tgts, out / "timeline.jsonl")
    sampler.other_pids = [*cp.pids(), *(st.pid for st in stack.stack.status() if st.pid)]
    task = asyncio.create_task(sampler.run(args.sample_s))
    marks: dict[str, float] = {}
    try:
        # KEDA accepts the chart: every ScaledObject Ready (its Kafka scaler works) and an HPA made from it.
        await until(
            sampler,
            "ScaledObjects Ready",
            120,
            lambda tick: all(
                condition(api.get(so_path + t.scaled_object), "Ready")
                and tick.readings[n].desired is not None
                for n, t in tgts.items()
            ),
        )
        accepted = {
            n: ((api.get(so_path + t.scaled_object) or {}).get("status") or {}).get("conditions") or []
            for n, t in tgts.items()
        }
        for d in applied:
            if d["kind"] == "ScaledObject":
                api.apply(paused(d, 1), NAMESPACE)
        await until(
            sampler, "one consuming worker each", args.timeout_s, settled(tgts, dict.fromkeys(tgts, 1))
        )
        marks |= await burst(sampler, s, args, "one_replica", "a")
        await until(sampler, "lag 0 (one replica)", args.timeout_s, all_drained(tgts))
        sampler.phase = "unpause"
        for d in applied:
            if d["kind"] == "ScaledObject":
                api.apply(paused(d, None), NAMESPACE)
        floors = {n: t.floor for n, t in tgts.items()}
        await until(sampler, "back at minReplicaCount", args.timeout_s, settled(tgts, floors))
        marks |= await burst(sampler, s, args, "keda", "b")
        await until(sampler, "lag 0 (KEDA)", args.timeout_s, all_drained(tgts))
        await until(
            sampler, "scaled back to minReplicaCount", args.scale_back_timeout_s, settled(tgts, floors)
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sampler.out.close()
        shim.stop()
        await lags.stop()
    one, keda = sampler.phase_ticks("one_replica"), sampler.phase_ticks("keda")
    starts = {k: v for k, v in marks.items() if not k.endswith("_published")}
    published = {k.removesuffix("_published"): v for k, v in marks.items() if k.endswith("_published")}
    return {
        "consumers": {n: consumer_report(t, one, keda, starts, published) for n, t in tgts.items()},
        "peak_rss_mb": round(sampler.peak_rss_mb),
        "scaled_object_conditions": {
            n: [c["type"] + "=" + c["status"] for c in cs] for n, cs in accepted.items()
        },
        "worker_exits": shim.exits,
        "timeline": str(out / "timeline.jsonl"),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    builder = Builder(cache_dir(), log)
    this_build_s = await asyncio.to_thread(builder.build)
    stack = BenchStack()
    stack.settings = stack.settings.model_copy(
        update={"kafka": stack.settings.kafka.model_copy(update={"default_partitions": args.partitions})}
    )
    s = stack.settings
    cp = ControlPlane(builder.cache, stack.home / "k8s", log)
    t0 = time.monotonic()
    try:
        log(f"bench stack under {stack.home}")
        await asyncio.to_thread(stack.up)
        topics = desired_topics(s.kafka)
        for t in topics:  # the serving input gets more partitions: rerank's floor is 2 replicas
            if t.name == s.kafka.topic_prefix + CONSUMERS["rerank"].topic:
                t.num_partitions = args.serving_partitions
        await ensure_topics(s.kafka, topics)
        api = await asyncio.to_thread(cp.up)
        log(f"control plane up in {time.monotonic() - t0:.0f}s")
        result = await scenario(api, s, stack, cp, args)
    finally:
        await asyncio.to_thread(cp.down)
        await asyncio.to_thread(stack.down, args.keep)
    return {
        **result,
        "build_s": round(builder.cold_build_s()),
        "build_s_this_run": round(this_build_s, 1),
        "documents": args.documents,
        "queries": args.queries,
        "partitions": {"ingestion": args.partitions, "rerank": args.serving_partitions},
        "overrides": chart_overrides(s.kafka.bootstrap_servers, args.cooldown_s, ()),
        "run_s": round(time.monotonic() - t0),
    }


async def interruptible(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """SIGTERM / SIGINT cancel the run, so every `finally` stops what it started (a background shell
    ignores SIGINT for its children, so a plain KeyboardInterrupt is not enough)."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await task


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, default=400, help="documents per burst (two bursts)")
    ap.add_argument("--doc-chars", type=int, default=700, help="text per document (about one chunk)")
    ap.add_argument("--queries", type=int, default=3000, help="retrieved queries per burst, for rerank")
    ap.add_argument("--passages", type=int, default=30, help="candidate passages per query")
    ap.add_argument("--partitions", type=int, default=2, help="ingestion topics (KEDA caps replicas at this)")
    ap.add_argument("--serving-partitions", type=int, default=4, help="rerank's input topic")
    ap.add_argument("--cooldown-s", type=int, default=20, help="ScaledObject cooldownPeriod (chart: 300/120)")
    ap.add_argument("--embedding-backend", default="torch-fp32", help="the embedder's embedding.backend")
    ap.add_argument("--sample-s", type=float, default=1.0)
    ap.add_argument("--timeout-s", type=float, default=420.0, help="per wait (workers up, lag 0)")
    ap.add_argument("--scale-back-timeout-s", type=float, default=300.0)
    ap.add_argument("--keep", action="store_true", help="keep the stack home (logs, timeline)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    warnings.filterwarnings("ignore", category=ResourceWarning)
    if shutil.which("openssl") is None:
        raise SystemExit("openssl is needed for the control plane's certificates")
    result = asyncio.run(interruptible(run(parse(argv))))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
