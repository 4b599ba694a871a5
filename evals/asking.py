"""Talking to the pipeline as users do: queries as events, documents as source changes, prompts captured.

Shared by the question-set runner and the leak suite. Queries go to `query.requested.v1` (the path the
gateway takes); answers and retrieval results are followed by id. When no serving consumers are running
for these topics, `serving_pipeline` starts them in this process (as `ragstream demo` does), with a
prompt capture on the generation stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from producers.folder import walk
from producers.publisher import DocumentPublisher
from producers.receipts import ReceiptWatcher
from ragstream.core.normalize import detect_mime
from ragstream.runtime.kafka_admin import ensure_topics, group_id
from ragstream.runtime.queries import QueryClient
from ragstream.settings import Settings
from schemas.envelope import utcnow
from schemas.ingestion import INLINE_CONTENT_MAX_BYTES, Acl
from schemas.serving import Caller, QueryRequested, QuerySpec
from schemas.topics import CONSUMERS, QUERIES_REQUESTED

PipelineMode = Literal["auto", "local", "external"]
SERVING = ("retrieval", "rerank", "generation")
ALL = ("normalizer", "chunker", "embedder", *SERVING)


class PromptCapture:
    """`on_prompt` hook for the generation stage: query id -> the exact text the model received."""

    def __init__(self) -> None:
        self.prompts: dict[str, str] = {}

    def __call__(self, query_id: str, messages: list[dict[str, str]]) -> None:
        self.prompts[query_id] = "\n".join(m["content"] for m in messages)

    def get(self, query_id: str) -> str | None:
        return self.prompts.get(query_id)


@dataclass
class Asked:
    """What the pipeline said about one query."""

    query_id: str
    final: Any  # QueryAnswered | QueryFailed | None (timeout)
    retrieved: Any  # QueryRetrieved | None
    deltas: list[Any] = field(default_factory=list)
    latency_ms: float = 0.0
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.final is not None and self.final.type == "QueryAnswered"


def with_generation(settings: Settings, generation: str | None) -> Settings:
    """Settings whose index generation (collections) is `generation` (unchanged when None)."""
    if not generation or generation == settings.index.generation:
        return settings
    index = settings.index.model_copy(update={"generation": generation})
    return settings.model_copy(update={"index": index})


def _spec_fields() -> set[str]:
    return set(QuerySpec.model_fields)


async def ask(
    client: QueryClient,
    *,
    tenant: str,
    subject: str,
    groups: Iterable[str],
    question: str,
    top_k: int = 8,
    request_class: str = "interactive",
    generation: str | None = None,
    timeout_s: float = 120.0,
) -> Asked:
    """Publish one QueryRequested and wait for its final answer; never raises on a timeout."""
    qid = str(uuid.uuid4())
    fields: dict[str, Any] = {
        "query_id": qid,
        "question": question,
        "caller": Caller(subject=subject, groups=tuple(groups)),
        "top_k": top_k,
        "request_class": request_class,
        "deadline_at": utcnow() + timedelta(seconds=timeout_s),
    }
    if generation and "generation" in _spec_fields():
        fields["generation"] = generation
    if "requested_at" in _spec_fields():
        fields["requested_at"] = utcnow()
    spec = QuerySpec(**fields)
    t0 = time.perf_counter()
    await client.producer.send(
        QUERIES_REQUESTED.name, QueryRequested(tenant_id=tenant, query=spec), qid.encode()
    )
    done = client._done[qid]
    error = None
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    except TimeoutError:
        error = f"no final answer within {timeout_s:.0f}s"
    latency = (time.perf_counter() - t0) * 1000
    evs = client.events.pop(qid, [])
    client._done.pop(qid, None)
    final = next((e for e in evs if e.type in ("QueryAnswered", "QueryFailed")), None)
    retrieved = next((e for e in evs if e.type == "QueryRetrieved"), None)
    if final is not None and final.type == "QueryFailed":
        error = f"{final.stage}: {final.reason}"
    deltas = sorted((e for e in evs if e.type == "AnswerDelta"), key=lambda d: d.seq)
    return Asked(qid, final, retrieved, deltas, latency, error)


async def serving_is_deployed(settings: Settings, timeout_s: float = 5.0) -> bool:
    """Whether every serving consumer group has a live member reading this deployment's topics."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.protocol.group import MemberAssignment

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap_servers, client_id=f"{settings.kafka.client_id}-eval"
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        groups = [group_id(settings.kafka, n) for n in SERVING]
        described = await asyncio.wait_for(admin.describe_consumer_groups(groups), timeout_s)
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    wanted = {group_id(settings.kafka, n): settings.kafka.topic_prefix + CONSUMERS[n].topic for n in SERVING}
    live: set[str] = set()
    for resp in described:
        for g in resp.groups:
            group_id, members = g[1], g[5]
            for m in members:
                try:
                    assignment = MemberAssignment.decode(m[4])
                except Exception:
                    continue
                topics = {t for t, _ in assignment.assignment}
                if wanted.get(group_id) in topics:
                    live.add(group_id)
    return all(g in live for g in wanted)


@contextlib.asynccontextmanager
async def serving_pipeline(
    settings: Settings,
    mode: PipelineMode = "auto",
    *,
    overrides: dict[str, dict[str, Any]] | None = None,
    capture: PromptCapture | None = None,
    names: tuple[str, ...] = ALL,
) -> AsyncIterator[tuple[bool, PromptCapture | None]]:
    """Yields (started_locally, capture). `local` always starts the consumers in this process,
    `external` never does, `auto` starts them when none are deployed for these topics."""
    start = mode == "local" or (mode == "auto" and not await serving_is_deployed(settings))
    if not start:
        await ensure_topics(settings.kafka)
        yield False, capture
        return
    from ragstream.runtime.pipeline import LocalPipeline

    cap = capture or PromptCapture()
    ov = {k: dict(v) for k, v in (overrides or {}).items()}
    ov.setdefault("generation", {}).setdefault("on_prompt", cap)
    pipeline = LocalPipeline(settings, names, ov)
    await pipeline.start()
    try:
        yield True, cap
    finally:
        await pipeline.stop()


@dataclass(frozen=True)
class SourceDoc:
    """One document to publish: inline bytes (small) or a file path (large, sent by URI)."""

    tenant: str
    document_id: str
    acl: Acl
    content: bytes | None = None
    path: Path | None = None
    mime_type: str = "text/plain"
    title: str = ""


def folder_docs(root: Path, tenant: str, acl: Acl) -> list[SourceDoc]:
    """Every file under `root` (document id = path relative to root, as `ragstream publish` names it)."""
    out = []
    for entry in walk(root):
        head = entry.path.read_bytes()[:4096]
        out.append(
            SourceDoc(
                tenant=tenant,
                document_id=entry.rel,
                acl=acl,
                path=entry.path,
                mime_type=detect_mime(entry.path.name, head),
            )
        )
    return out


async def publish_and_wait(
    settings: Settings, docs: Iterable[SourceDoc], *, timeout_s: float = 600.0
) -> dict[str, int]:
    """Publish upserts (unchanged content is a no-op downstream) and wait for every receipt."""
    docs = list(docs)
    if not docs:
        return {"published": 0, "indexed": 0}
    await ensure_topics(settings.kafka)
    watcher = ReceiptWatcher(settings)
    await watcher.start()
    sent: dict[str, float] = {}
    try:
        async with DocumentPublisher(settings, "ragstream.evals") as pub:
            for d in docs:
                raw = d.content if d.content is not None else (d.path.read_bytes() if d.path else b"")
                inline = len(raw) <= INLINE_CONTENT_MAX_BYTES
                ev = await pub.upsert(
                    d.tenant,
                    d.document_id,
                    content=raw if inline else None,
                    content_uri=None if inline or d.path is None else d.path.resolve().as_uri(),
                    mime_type=d.mime_type,
                    acl=d.acl,
                    title=d.title,
                    size_bytes=len(raw),
                    content_sha256=None if inline else hashlib.sha256(raw).hexdigest(),
                )
                sent[ev.correlation_id] = time.monotonic()
        receipts = await watcher.wait_for(sent, timeout_s)
    finally:
        await watcher.stop()
    if len(receipts) < len(sent):
        raise TimeoutError(f"only {len(receipts)} of {len(sent)} documents indexed within {timeout_s:.0f}s")
    return {"published": len(sent), "indexed": len(receipts)}
