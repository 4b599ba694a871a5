"""Chaos benchmark: at-least-once ingestion must converge to exactly the expected index under SIGKILLs and
broker and Weaviate restarts.

On a stack of its own (a separate `Stack` under a temporary `stack.home` with its own ports; the Kafka jars
and the Weaviate binary come from the shared read-only cache), never the shared default stack:

1. the ingestion consumers run as deployed, one `ragstream worker NAME` process each (normalizer, chunker,
   embedder with the real sentence-transformers model), configured through `RAGSTREAM_*` variables;
2. a seeded plan of operations over `--documents` documents in a few tenants (creates, edits that change
   the content, ACL changes, deletes and re-creates, interleaved) is published in slices, one slice per
   disruption: each ingestion worker in turn is SIGKILLed while it has a backlog and restarted at once,
   then the broker and then Weaviate are restarted with the project's stack code (`Stack.restart`);
3. once every group's lag is 0, the index is read back (document states and every stored chunk, by
   tenant) and compared exactly with the final state computed from the plan: per document its chunk ids
   (the chunker's own deterministic ids for the expected version), source version and ACL; deleted
   documents absent; nothing else stored.

Counted per run and summed: `chunks_lost` (expected chunk ids not stored or not named by the document's
state), `chunks_duplicated` (stored chunks that are not expected: leftovers of an older version, chunks of
a deleted document, repeated ids), `stale_versions` (documents whose state or chunks carry another version,
deleted documents with a state), `acl_mismatches` (documents whose state or chunks carry another ACL).
`recovery_s_p95`: SIGKILL -> the killed consumer group's lag back to 0 (ragstream.runtime.offsets), p95 over
every kill of every run (ragstream.core.stats). `--runs` repeats with other seeds, each on a fresh topic
prefix and index generation. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from application.stack.manager import Stack
from application.stack.secrets import localize
from bench.common import exit_on_sigterm, free_ports
from producers.publisher import DocumentPublisher
from ragstream.adapters.store import open_store
from ragstream.adapters.tokenizer import HFTokenizer
from ragstream.core.stats import percentile
from ragstream.indexing.transforms import to_chunked, to_normalized
from ragstream.ports import ChunkStore
from ragstream.runtime.deps import chunking_policy
from ragstream.runtime.kafka_admin import desired_topics, ensure_topics, group_id
from ragstream.runtime.limits import Limits
from ragstream.runtime.offsets import LagReader
from ragstream.settings import Settings
from schemas.ingestion import Acl, DocumentChanged
from schemas.topics import CONSUMERS, INGESTION, TOPICS

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("kafka", "weaviate")
TENANTS = ("acme", "globex", "initech", "umbrella")
PRINCIPALS = tuple(f"user{i}" for i in range(8))
GROUPS = ("everyone", "eng", "sales", "legal", "ops")
_VOCABULARY = (
    "kafka broker partition offset replica leader quorum segment index vector tenant chunk document "
    "policy embedding search query answer stream commit retry backoff schema version source receipt "
    "normalizer chunker embedder weaviate shard cursor state latency throughput ledger invoice contract "
    "meeting budget roadmap release incident postmortem rollout canary backup restore audit"
)
WORDS = tuple(_VOCABULARY.split())
SAMPLE_S = 0.25


# --- a stack of its own -----------------------------------------------------------------------------------


def bench_settings(home: Path) -> Settings:
    """Settings of a separate stack under `home` with its own ports (the caches stay shared), its secrets
    generated there like `stack up` does."""
    base = Settings()
    kafka, controller, http, grpc, gossip, data, raft, raft_rpc = free_ports(8)
    stack = base.stack.model_copy(
        update={
            "home": home,
            "kafka_port": kafka,
            "kafka_controller_port": controller,
            "kafka_sasl_ssl_port": 0,
            "weaviate_http_port": http,
            "weaviate_grpc_port": grpc,
            "weaviate_gossip_port": gossip,
            "weaviate_data_port": data,
            "weaviate_raft_port": raft,
            "weaviate_raft_internal_rpc_port": raft_rpc,
            "local_mode": True,
        }
    )
    s = base.model_copy(
        update={
            "stack": stack,
            "kafka": base.kafka.model_copy(
                update={"bootstrap_servers": f"127.0.0.1:{kafka}", "topic_prefix": ""}
            ),
            # Empty: localize fills this stack's own key (never the default stack's).
            "weaviate": base.weaviate.model_copy(
                update={"url": f"http://127.0.0.1:{http}", "grpc_port": grpc, "api_key": SecretStr("")}
            ),
        }
    )
    return localize(s, create=True)


class BenchStack:
    """Kafka and Weaviate for this bench only, started and stopped by recorded pid."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or Path(tempfile.mkdtemp(prefix="ragstream-chaos-"))
        self.settings = bench_settings(self.home)
        self.stack = Stack(self.settings)  # Kafka and Weaviate only: no model server

    def _progress(self, service: str, line: str) -> None:
        if line.startswith(("started", "healthy", "stopped")):
            log(f"bench stack {service}: {line}")

    def up(self) -> None:
        self.stack.up(self._progress)

    def restart(self, service: str) -> float:
        t0 = time.monotonic()
        self.stack.restart(service, self._progress)
        return time.monotonic() - t0

    def down(self, keep: bool) -> None:
        self.stack.down()
        if not keep:
            shutil.rmtree(self.home, ignore_errors=True)


# --- the seeded plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    kind: str  # upsert | acl | delete
    tenant: str
    doc: str
    content: bytes = b""
    acl: Acl = field(default_factory=Acl)


def _text(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = rng.choices(WORDS, k=rng.randint(7, 14))
        out.append(" ".join(words).capitalize() + ".")
    return " ".join(out)


def _content(rng: random.Random, tenant: str, doc: str, n: int) -> bytes:
    # Unique per (document, edit): an edit always changes the content, so it is never an unchanged no-op.
    long = rng.random() < 0.1  # a few documents of several chunks
    body = _text(rng, rng.randint(30, 45) if long else rng.randint(2, 5))
    return f"{tenant} {doc} edit {n}. {body}\n".encode()


def _acl(rng: random.Random) -> Acl:
    return Acl(
        principals=tuple(rng.sample(PRINCIPALS, rng.randint(0, 2))),
        groups=tuple(rng.sample(GROUPS, rng.randint(1, 2))),
    )


def plan(seed: int, documents: int) -> list[Op]:
    """Creates of `documents` documents interleaved with ~documents/2 mutations of those created so far:
    edits, ACL changes, deletes, and re-creates of deleted ones."""
    rng = random.Random(seed)
    keys = [(TENANTS[i % len(TENANTS)], f"doc-{i:05d}") for i in range(documents)]
    rng.shuffle(keys)
    ops: list[Op] = []
    live: list[tuple[str, str]] = []
    gone: list[tuple[str, str]] = []
    edits: dict[tuple[str, str], int] = {}
    mutations = documents // 2
    while keys or mutations:
        if keys and (not live or not mutations or rng.random() < 0.65):
            key = keys.pop()
            live.append(key)
            edits[key] = 0
            ops.append(Op("upsert", *key, _content(rng, *key, 0), _acl(rng)))
            continue
        mutations -= 1
        roll = rng.random()
        if gone and roll < 0.08:  # re-create a deleted document
            key = gone.pop(rng.randrange(len(gone)))
            live.append(key)
        elif roll < 0.25:
            key = live.pop(rng.randrange(len(live)))
            gone.append(key)
            ops.append(Op("delete", *key))
            continue
        else:
            key = rng.choice(live)
        if roll < 0.6:
            edits[key] += 1
            ops.append(Op("upsert", *key, _content(rng, *key, edits[key]), _acl(rng)))
        else:
            ops.append(Op("acl", *key, acl=_acl(rng)))
    return ops


# --- the expected final state -----------------------------------------------------------------------------


@dataclass
class Expected:
    version: str
    chunk_ids: frozenset[str]
    acl: Acl


class Model:
    """The final index the plan must converge to, from the pipeline's own pure transforms."""

    def __init__(self, settings: Settings) -> None:
        self.policy = chunking_policy(settings)
        self.tokenizer = HFTokenizer()  # what `wire` gives the chunker
        self.max_bytes = Limits.of(settings).document_bytes
        self.docs: dict[tuple[str, str], Expected] = {}

    def apply(self, op: Op, event: DocumentChanged | None) -> None:
        key = (op.tenant, op.doc)
        if op.kind == "delete":
            self.docs.pop(key, None)
        elif op.kind == "acl":
            if key in self.docs:  # an ACL change of a document that is not indexed changes nothing
                self.docs[key].acl = op.acl
        else:
            assert event is not None
            normalized = to_normalized(event, op.content, self.max_bytes)
            chunked = to_chunked(normalized, self.policy, self.tokenizer)
            ids = frozenset(c.chunk_id for c in chunked.chunks)
            self.docs[key] = Expected(event.source_version, ids, op.acl)


# --- worker processes -------------------------------------------------------------------------------------


def worker_env(s: Settings, embedding_backend: str = "auto") -> dict[str, str]:
    """The environment of a worker on this bench's stack and namespace (inherited RAGSTREAM_* dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTREAM_")}
    env.update(
        RAGSTREAM_STACK__HOME=str(s.stack.home),
        RAGSTREAM_KAFKA__BOOTSTRAP_SERVERS=s.kafka.bootstrap_servers,
        RAGSTREAM_KAFKA__TOPIC_PREFIX=s.kafka.topic_prefix,
        RAGSTREAM_KAFKA__DEFAULT_PARTITIONS=str(s.kafka.default_partitions),
        RAGSTREAM_WEAVIATE__URL=s.weaviate.url,
        RAGSTREAM_WEAVIATE__GRPC_PORT=str(s.weaviate.grpc_port),
        RAGSTREAM_INDEX__GENERATION=s.index.generation,
        RAGSTREAM_EMBEDDING__BACKEND=embedding_backend,
        RAGSTREAM_TELEMETRY__METRICS_PORT="0",  # three workers on one host: no shared /metrics port
        PYTHONUNBUFFERED="1",
    )
    return env


class Workers:
    """One `ragstream worker NAME` process per ingestion consumer, each in its own session (so a SIGKILL
    by pid reaches that process only)."""

    def __init__(self, s: Settings, logs: Path, embedding_backend: str = "auto") -> None:
        self.env = worker_env(s, embedding_backend)
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.unexpected_exits: list[str] = []
        # Where each process's own lines begin in its (appended) log.
        self._log_from: dict[str, int] = {}

    def _log(self, name: str) -> Path:
        return self.logs / f"worker-{name}.log"

    def start(self, name: str) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_file = self._log(name)
        self._log_from[name] = log_file.stat().st_size if log_file.exists() else 0
        with log_file.open("ab") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "application.cli.main", "worker", name, "--metrics-port", "0"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def consuming(self, name: str) -> bool:
        """The process has joined its group (`run_worker` logs "NAME consuming TOPIC as GROUP" once its
        model is loaded and its consumer started)."""
        with self._log(name).open("rb") as fh:
            fh.seek(self._log_from[name])
            return f"{name} consuming ".encode() in fh.read()

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def revive(self) -> None:
        """A worker that exited on its own is a finding (recorded) and is restarted, as a pod would be."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.unexpected_exits.append(f"{name} exit {proc.returncode}")
                log(f"worker {name} exited on its own (rc {proc.returncode}); restarting it")
                self.start(name)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- lag ----------------------------------------------------------------------------------------------------


class Lags:
    """The ingestion groups' lag on their input topics, read through the runtime's LagReader; a reader that
    fails (the broker restarting) is replaced."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self._reader: LagReader | None = None

    async def _fresh(self) -> LagReader:
        if self._reader is None:
            reader = LagReader(self.s.kafka, client_id=f"chaos-lag-{uuid.uuid4().hex[:6]}")
            await asyncio.wait_for(reader.start(), 15)
            self._reader = reader
        return self._reader

    async def lag(self, name: str) -> int | None:
        spec = CONSUMERS[name]
        try:
            reader = await self._fresh()
            return await asyncio.wait_for(
                reader.lag(group_id(self.s.kafka, name), self.s.kafka.topic_prefix + spec.topic), 10
            )
        except Exception:
            await self.close()
            return None

    async def progress(self, name: str) -> tuple[int, int] | None:
        """(lag, sum of committed offsets) of the group, None while the broker does not answer."""
        spec = CONSUMERS[name]
        try:
            reader = await self._fresh()
            found = await asyncio.wait_for(
                reader.offsets(group_id(self.s.kafka, name), self.s.kafka.topic_prefix + spec.topic), 10
            )
        except Exception:
            await self.close()
            return None
        return found.lag(), sum(found.committed.values())

    async def dead_letters(self) -> int:
        reader = await self._fresh()
        total = 0
        for spec in TOPICS.values():
            total += sum((await reader.end_offsets(self.s.kafka.topic_prefix + spec.dlq)).values())
        return total

    async def all_zero(self) -> bool:
        # Upstream first: a stage at 0 has acknowledged its outputs, so the next stage's ends include them.
        for name in INGESTION:
            if await self.lag(name) != 0:
                return False
        return True

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.stop(), 10)


# --- one run ------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    seed: int
    operations: int
    chunks_expected: int = 0
    chunks_lost: int = 0
    chunks_duplicated: int = 0
    stale_versions: int = 0
    acl_mismatches: int = 0
    dead_letters: int = 0
    recoveries: dict[str, float] = field(default_factory=dict)
    # Kill -> the new process consuming (its share of the recovery: imports, model load, group join).
    startups: dict[str, float] = field(default_factory=dict)
    restarts: dict[str, float] = field(default_factory=dict)
    unexpected_exits: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timed_out: str = ""

    @property
    def exact(self) -> bool:
        bad = self.chunks_lost + self.chunks_duplicated + self.stale_versions + self.acl_mismatches
        return bad == 0 and self.dead_letters == 0 and not self.timed_out


def run_settings(stack: Settings, seed: int, partitions: int) -> Settings:
    tag = f"{seed}x{uuid.uuid4().hex[:6]}"
    kafka = stack.kafka.model_copy(update={"topic_prefix": f"chaos{tag}.", "default_partitions": partitions})
    index = stack.index.model_copy(update={"generation": f"c{tag}"})
    return stack.model_copy(update={"kafka": kafka, "index": index})


def slices(ops: Sequence[Op], n: int) -> list[list[Op]]:
    size = math.ceil(len(ops) / max(n, 1))
    return [list(ops[i : i + size]) for i in range(0, len(ops), size)] or [[]]


async def publish(s: Settings, ops: Iterable[Op], model: Model) -> None:
    async with DocumentPublisher(s, "bench.chaos") as pub:
        for op in ops:
            event: DocumentChanged | None = None
            if op.kind == "upsert":
                event = await pub.upsert(op.tenant, op.doc, content=op.content, acl=op.acl)
            elif op.kind == "acl":
                await pub.acl_change(op.tenant, op.doc, op.acl)
            else:
                await pub.delete(op.tenant, op.doc)
            model.apply(op, event)


async def wait_until(check: Callable[[], Any], timeout_s: float, what: str, workers: Workers) -> float:
    """Poll `check` (async) until true; returns the monotonic time it first was."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers.revive()
        if await check():
            return time.monotonic()
        await asyncio.sleep(SAMPLE_S)
    raise TimeoutError(f"{what} not reached within {timeout_s:.0f}s")


async def consuming(workers: Workers, names: Sequence[str], timeout_s: float) -> None:
    async def check() -> bool:
        return all(workers.consuming(n) for n in names)

    await wait_until(check, timeout_s, f"{', '.join(names)} consuming", workers)


async def busy(lags: Lags, name: str, timeout_s: float, workers: Workers) -> None:
    """Wait until `name` is working through a backlog (lag > 0 and its commits moving), so the disruption
    lands mid-stream rather than on an idle consumer; give up after `timeout_s` and disrupt anyway."""
    await consuming(workers, [name], timeout_s)
    deadline = time.monotonic() + timeout_s
    first: int | None = None
    while time.monotonic() < deadline:
        workers.revive()
        found = await lags.progress(name)
        if found is not None:
            lag, done = found
            first = done if first is None else first
            if lag > 0 and done > first:
                return
        await asyncio.sleep(0.05)


async def disrupt(
    target: str, stack: BenchStack, workers: Workers, lags: Lags, result: RunResult, timeout_s: float
) -> None:
    if target in SERVICES:
        await busy(lags, "embedder", 60, workers)
        log(f"  restarting {target}")
        result.restarts[target] = round(await asyncio.to_thread(stack.restart, target), 2)
        return
    await busy(lags, target, 60, workers)
    killed_at = time.monotonic()
    workers.kill(target)
    workers.start(target)  # restarted at once, as its Deployment would
    log(f"  SIGKILLed and restarted {target}")

    async def caught_up() -> bool:
        if target not in result.startups and workers.consuming(target):
            result.startups[target] = round(time.monotonic() - killed_at, 2)
        return await lags.lag(target) == 0

    back = await wait_until(caught_up, timeout_s, f"{target} lag 0 after its kill", workers)
    result.recoveries[target] = round(back - killed_at, 2)


async def one_run(
    stack: BenchStack, seed: int, args: argparse.Namespace, disruptions: list[str]
) -> RunResult:
    t0 = time.monotonic()
    s = run_settings(stack.settings, seed, args.partitions)
    ops = plan(seed, args.documents)
    result = RunResult(seed, len(ops))
    model = Model(s)
    await ensure_topics(s.kafka, desired_topics(s.kafka))
    workers = Workers(s, stack.home / "logs" / s.kafka.topic_prefix.rstrip("."), args.embedding_backend)
    lags = Lags(s)
    try:
        for name in INGESTION:
            workers.start(name)
        # Disruptions are timed against a working pipeline: first every worker up (the embedder loads
        # its model, and with backend auto probes the backends, before it joins its group).
        await consuming(workers, INGESTION, args.timeout_s)
        for target, part in zip(disruptions or ["none"], slices(ops, len(disruptions)), strict=False):
            if target in SERVICES or target == "none":
                # The bench's own publisher is not under test: the slice is acknowledged before a service
                # restart, whose backlog is then in flight in the pipeline.
                await publish(s, part, model)
                if target != "none":
                    await disrupt(target, stack, workers, lags, result, args.timeout_s)
                continue
            # A worker is killed while the slice is still being published to the pipeline.
            sending = asyncio.create_task(publish(s, part, model))
            try:
                await disrupt(target, stack, workers, lags, result, args.timeout_s)
            finally:
                await sending  # the model must hold every operation that was published
        await wait_until(lags.all_zero, args.timeout_s, "every ingestion group at lag 0", workers)
    except TimeoutError as exc:  # not converged in time: this run is not exact; the next one still runs
        result.timed_out = str(exc)
        log(f"  run {seed}: {exc}")
    try:
        result.dead_letters = await lags.dead_letters()
        result.unexpected_exits = list(workers.unexpected_exits)
    finally:
        workers.stop()
        await lags.close()
    await asyncio.to_thread(compare, s, model, result)
    result.seconds = round(time.monotonic() - t0, 1)
    return result


# --- the comparison -----------------------------------------------------------------------------------------


def _acl_of(obj: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    get = obj.get if isinstance(obj, dict) else lambda k: getattr(obj, k)
    return tuple(sorted(get("acl_principals") or ())), tuple(sorted(get("acl_groups") or ()))


def compare(s: Settings, model: Model, result: RunResult) -> None:
    client, store = open_store(s)
    try:
        for tenant in TENANTS:
            expected = {doc: e for (t, doc), e in model.docs.items() if t == tenant}
            compare_tenant(store, tenant, expected, result)
    finally:
        client.close()


def compare_tenant(store: ChunkStore, tenant: str, expected: dict[str, Expected], result: RunResult) -> None:
    states = {st.document_id: st for st in store.list_states(tenant, limit=None)}
    chunks: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for c in store.iter_chunks(tenant):
        if c["chunk_id"] in seen:
            result.chunks_duplicated += 1
            result.examples.append(f"{tenant}: chunk {c['chunk_id']} stored twice")
        seen.add(c["chunk_id"])
        chunks.setdefault(c["document_id"], []).append(c)
    for doc in sorted(set(expected) | set(states) | set(chunks)):
        check_document(tenant, doc, expected.get(doc), states.get(doc), chunks.get(doc, []), result)


def check_document(
    tenant: str, doc: str, exp: Expected | None, state: Any, chunks: list[dict[str, Any]], result: RunResult
) -> None:
    def note(what: str) -> None:
        if len(result.examples) < 20:
            result.examples.append(f"{tenant}/{doc}: {what}")

    stored = {c["chunk_id"]: c for c in chunks}
    if exp is None:  # deleted (or never indexed): nothing may remain
        if state is not None:
            result.stale_versions += 1
            note(f"deleted but its state ({state.live_version}) remains")
        if stored:
            result.chunks_duplicated += len(stored)
            note(f"deleted but {len(stored)} chunks remain")
        return
    result.chunks_expected += len(exp.chunk_ids)
    named = set(state.chunk_ids) if state is not None else set()
    lost = {c for c in exp.chunk_ids if c not in stored or c not in named}
    extra = set(stored) - exp.chunk_ids
    result.chunks_lost += len(lost)
    result.chunks_duplicated += len(extra)
    if lost or extra:
        note(f"{len(lost)} chunks lost, {len(extra)} extra (state names {len(named)})")
    versions = {c.get("source_version") for c in stored.values() if c["chunk_id"] in exp.chunk_ids}
    if state is None or state.live_version != exp.version or versions - {exp.version}:
        result.stale_versions += 1
        note(f"version {state.live_version if state else None} / chunks {sorted(map(str, versions))}")
    want = (exp.acl.principals, exp.acl.groups)
    acls = {_acl_of(c) for c in stored.values()}
    if (state is not None and _acl_of(state) != want) or acls - {want}:
        result.acl_mismatches += 1
        note(f"ACL {sorted(acls)} / state {_acl_of(state) if state else None}, expected {want}")


# --- the report ---------------------------------------------------------------------------------------------


def summary(results: list[RunResult]) -> dict[str, Any]:
    recoveries = [v for r in results for v in r.recoveries.values()]
    p95 = percentile(recoveries, 95, empty=math.nan)
    return {
        "runs": len(results),
        "runs_exact": sum(r.exact for r in results),
        "chunks_expected": sum(r.chunks_expected for r in results),
        "chunks_lost": sum(r.chunks_lost for r in results),
        "chunks_duplicated": sum(r.chunks_duplicated for r in results),
        "stale_versions": sum(r.stale_versions for r in results),
        "acl_mismatches": sum(r.acl_mismatches for r in results),
        "recovery_s_p95": None if math.isnan(p95) else round(p95, 2),
    }


def run_line(r: RunResult) -> dict[str, Any]:
    return {
        "run_seed": r.seed,
        "exact": r.exact,
        "operations": r.operations,
        "chunks_expected": r.chunks_expected,
        "chunks_lost": r.chunks_lost,
        "chunks_duplicated": r.chunks_duplicated,
        "stale_versions": r.stale_versions,
        "acl_mismatches": r.acl_mismatches,
        "dead_letters": r.dead_letters,
        "recovery_s": r.recoveries,
        "restart_to_consuming_s": r.startups,
        "service_restart_s": r.restarts,
        "unexpected_worker_exits": r.unexpected_exits,
        "examples": r.examples[:10],
        "timed_out": r.timed_out,
        "run_s": r.seconds,
    }


def log(line: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    disruptions = [*args.kill, *args.restart]
    unknown = set(disruptions) - {*INGESTION, *SERVICES}
    if unknown:
        raise SystemExit(f"unknown disruption(s): {', '.join(sorted(unknown))}")
    stack = BenchStack()
    results: list[RunResult] = []
    try:
        log(f"bench stack under {stack.home}")
        await asyncio.to_thread(stack.up)
        for i in range(args.runs):
            seed = args.seed + i
            log(f"run {i + 1}/{args.runs} (seed {seed})")
            r = await one_run(stack, seed, args, disruptions)
            results.append(r)
            print(json.dumps(run_line(r)), flush=True)
    finally:
        await asyncio.to_thread(stack.down, args.keep_stack)
    return summary(results)


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--documents", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--kill", type=_names, default=list(INGESTION), help="workers to SIGKILL, in turn")
    ap.add_argument("--restart", type=_names, default=list(SERVICES), help="services to restart, in turn")
    ap.add_argument(
        "--embedding-backend",
        default="auto",
        help="the embedder's embedding.backend (auto, as deployed, probes the backends at every start)",
    )
    ap.add_argument("--timeout-s", type=float, default=600.0, help="per wait for lag 0")
    ap.add_argument("--keep-stack", action="store_true", help="keep the bench stack's home (logs, data)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    # The stack's process records outlive their Popen objects by design (pid files, not handles).
    warnings.filterwarnings("ignore", category=ResourceWarning)
    exit_on_sigterm()
    result = asyncio.run(run(parse(argv)))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
