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
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from producers.folder import walk
from producers.publisher import DocumentPublisher
from producers.receipts import ReceiptWatcher
from ragstream.core.normalize import detect_mime
from ragstream.runtime.deps import Deps
from ragstream.runtime.kafka_admin import ensure_topics, group_id
from ragstream.runtime.queries import QueryClient
from ragstream.settings import Settings
from schemas.envelope import utcnow
from schemas.ingestion import INLINE_CONTENT_MAX_BYTES, Acl
from schemas.serving import Caller, QueryRequested, QuerySpec
from schemas.topics import CONSUMERS, INGESTION, QUERIES_REQUESTED, SERVING

PipelineMode = Literal["auto", "local", "external"]
# The gateway's client surfaces: its native API, the OpenAI-compatible API and the MCP tools.
Surface = Literal["native", "openai", "mcp"]
ALL = (*INGESTION, *SERVING)


class Launcher(Protocol):
    """Starts consumers in this process: `application.pipeline.LocalPipeline` is one (the CLI passes
    it). The evaluation plane never builds consumers itself; it asks whoever runs it."""

    def __call__(
        self, settings: Settings, names: Sequence[str], deps: Deps | None = None, group_suffix: str = ""
    ) -> AbstractAsyncContextManager[Any]: ...


class NoLauncherError(RuntimeError):
    """A local pipeline was asked for but no launcher was given."""


def need_launcher(launch: Launcher | None) -> Launcher:
    if launch is None:
        raise NoLauncherError(
            "no local pipeline launcher: pass launch=application.pipeline.LocalPipeline, "
            "or run against deployed consumers (pipeline='external')"
        )
    return launch


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
    # What the gateway returned to the caller (answer, citations, ...), when asked through it.
    gateway: dict[str, Any] | None = None

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
    gateway: GatewayAsker | None = None,
) -> Asked:
    """Publish one QueryRequested (or POST it through the gateway) and wait for its final answer event;
    never raises on a timeout."""
    t0 = time.perf_counter()
    gw_task: asyncio.Task[dict[str, Any]] | None = None
    if gateway is not None:
        # The gateway builds the QueryRequested from the token; no generation pinning over HTTP.
        qid, gw_task = await gateway.submit(
            tenant, subject, tuple(groups), question, top_k=top_k, request_class=request_class
        )
    else:
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
        error = f"{final.stage}: {getattr(final, 'code', 'internal')}: {final.reason}"
    deltas = sorted((e for e in evs if e.type == "AnswerDelta"), key=lambda d: d.seq)
    seen_by_caller = None
    if gw_task is not None:
        try:
            seen_by_caller = await asyncio.wait_for(gw_task, max(5.0, timeout_s - latency / 1000))
        except Exception as exc:  # the events are judged anyway; the gateway's failure is reported
            error = error or f"gateway: {type(exc).__name__}: {exc}"
    return Asked(qid, final, retrieved, deltas, latency, error, seen_by_caller)


# The console's read-only pages (gateway/console_api.py), as the leak suite reads them.
CONSOLE_PAGES = ("me", "documents", "dead-letters", "generations", "evals", "reviews")


class GatewayAsker:
    """Queries over HTTP through the gateway, as a caller with a minted token; an in-process gateway on a
    free port unless `url` names a running one. Events are still followed (by query id) for retrieval.

    `surface`: `native` (POST /v1/queries, then its SSE stream), `openai` (POST /v1/chat/completions with
    stream true; the query id is the completion id's) or `mcp` (the `ask` tool, then `search`, over
    streamable HTTP at /mcp with the SDK's client). What the caller receives on that surface (text,
    citations, annotations, passages and snippets) is returned for the leak check."""

    def __init__(self, settings: Settings, url: str | None = None, surface: Surface = "native") -> None:
        self.settings = settings
        self.url = url
        self.surface = surface
        self._stack = contextlib.AsyncExitStack()
        self._tokens: dict[tuple[str, str, tuple[str, ...]], str] = {}

    async def __aenter__(self) -> GatewayAsker:
        if self.url is None:
            from gateway.app import create_app
            from gateway.server import serve_in_process

            self.url = await self._stack.enter_async_context(serve_in_process(create_app(self.settings)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def token(self, tenant: str, subject: str, groups: tuple[str, ...]) -> str:
        from gateway.auth import mint_token

        key = (tenant, subject, groups)
        if key not in self._tokens:
            self._tokens[key] = mint_token(self.settings.auth, tenant, subject, groups)
        return self._tokens[key]

    async def console_pages(self, tenant: str, subject: str, groups: tuple[str, ...]) -> str:
        """Every console page's JSON as this caller reads it (status and body, one page per line)."""
        import httpx

        assert self.url is not None
        headers = {"Authorization": f"Bearer {self.token(tenant, subject, groups)}"}
        out = []
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60.0) as http:
            for page in CONSOLE_PAGES:
                resp = await http.get(f"/v1/console/{page}")
                out.append(f"{page} {resp.status_code} {resp.text}")
        return "\n".join(out)

    async def submit(
        self, tenant: str, subject: str, groups: tuple[str, ...], question: str, **options: Any
    ) -> tuple[str, asyncio.Task[dict[str, Any]]]:
        """POST the query; returns its id and a task that streams it to the end (the caller's view)."""
        from gateway.client import GatewayClient

        assert self.url is not None
        token = self.token(tenant, subject, groups)
        request_class = str(options.get("request_class", "interactive"))
        if self.surface == "openai":
            return await _submit_openai(self.url, token, question, request_class)
        if self.surface == "mcp":
            return await _submit_mcp(self.url, token, question, request_class)
        client = GatewayClient(self.url, token, timeout_s=600.0)
        accepted = await client.submit(question, **options)
        qid = accepted["query_id"]

        async def follow() -> dict[str, Any]:
            import json

            final: dict[str, Any] = {}
            event = ""
            try:
                async for ev in client.stream(qid):
                    if ev.event in ("answer", "error"):
                        event, final = ev.event, json.loads(ev.data)
                        break
            finally:
                await client.http.aclose()
            return {"event": event, **final}

        return qid, asyncio.create_task(follow())


async def _submit_openai(
    url: str, token: str, question: str, request_class: str
) -> tuple[str, asyncio.Task[dict[str, Any]]]:
    """A streamed chat completion: the first chunk names the query; the task reads the rest."""
    import json
    from urllib.parse import unquote, urlparse

    import httpx

    from gateway.client import GatewayError, parse_sse

    http = httpx.AsyncClient(base_url=url, timeout=600.0, headers={"Authorization": f"Bearer {token}"})
    body = {
        "model": f"ragstream:{request_class}",
        "stream": True,
        "messages": [{"role": "user", "content": question}],
    }
    stream = http.stream("POST", "/v1/chat/completions", json=body)
    try:
        resp = await stream.__aenter__()
        if resp.status_code >= 400:
            await resp.aread()
            raise GatewayError(resp.status_code, resp.text[:500])
        events = aiter(parse_sse(resp.aiter_lines()))
        first = json.loads((await anext(events)).data)
    except BaseException:
        await stream.__aexit__(None, None, None)
        await http.aclose()
        raise
    qid = str(first["id"]).removeprefix("chatcmpl-")

    async def follow() -> dict[str, Any]:
        text: list[str] = []
        final: dict[str, Any] = {}
        try:
            async for ev in events:
                if ev.data.startswith("[DONE]"):
                    break
                data = json.loads(ev.data)
                if data.get("error"):
                    return {"event": "error", **data["error"]}
                choice = (data.get("choices") or [{}])[0]
                delta = choice.get("delta") or {}
                text.append(delta.get("content") or "")
                if choice.get("finish_reason"):
                    final = data
        finally:
            await stream.__aexit__(None, None, None)
            await http.aclose()
        extra = final.get("ragstream") or {}
        notes = (final.get("choices") or [{}])[0].get("delta", {}).get("annotations") or []
        cited = list(final.get("citations") or [])
        for a in notes:  # what an OpenAI client keeps: the annotation's URL (document id) and title
            u = a.get("url_citation") or {}
            cited.append(
                {
                    "document_id": unquote(urlparse(u.get("url", "")).path.lstrip("/")),
                    "title": u.get("title", ""),
                }
            )
        return {
            "event": "answer" if final else "error",
            "answer": "".join(text) + "\n" + str(extra.get("answer", "")),
            "citations": cited,
        }

    return qid, asyncio.create_task(follow())


async def _submit_mcp(
    url: str, token: str, question: str, request_class: str
) -> tuple[str, asyncio.Task[dict[str, Any]]]:
    """The MCP `ask` tool (its query id names the events), then `search` with the same question; both
    results are what the caller received."""
    import json

    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    def data(result: Any) -> dict[str, Any]:
        if result.is_error:
            text = result.content[0].text if result.content else "tool error"
            raise RuntimeError(f"mcp tool error: {text[:300]}")
        d = result.structured_content
        if isinstance(d, dict) and set(d) == {"result"}:
            d = d["result"]
        return d if isinstance(d, dict) else json.loads(result.content[0].text)

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(600.0))
    async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        asked = data(await client.call_tool("ask", {"question": question, "request_class": request_class}))
        found = data(await client.call_tool("search", {"query": question}))
    passages = list(found.get("passages") or [])
    seen = {
        "event": "answer",
        "answer": "\n".join([str(asked.get("answer", "")), *(str(p.get("snippet", "")) for p in passages)]),
        "citations": [*(asked.get("citations") or []), *passages],
    }

    async def done() -> dict[str, Any]:
        return seen

    return str(asked["query_id"]), asyncio.create_task(done())


async def serving_is_deployed(settings: Settings, timeout_s: float = 5.0) -> bool:
    """Whether every serving consumer group has a live member reading this deployment's topics."""
    from aiokafka.protocol.group import MemberAssignment

    from ragstream.runtime import kafka

    admin = kafka.admin(settings.kafka, client_id=f"{settings.kafka.client_id}-eval")
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        described = []
        for n in SERVING:  # one group per call: aiokafka misreads a multi-group DescribeGroups answer
            gid = group_id(settings.kafka, n)
            described += await asyncio.wait_for(admin.describe_consumer_groups([gid]), timeout_s)
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    wanted = {group_id(settings.kafka, n): settings.kafka.topic_prefix + CONSUMERS[n].topic for n in SERVING}
    live: set[str] = set()
    for resp in described:
        for g in resp.groups:
            gid, members = g[1], g[5]
            for m in members:
                try:
                    assignment = MemberAssignment.decode(m[4])
                except Exception:
                    continue
                topics = {t for t, _ in assignment.assignment}
                if wanted.get(gid) in topics:
                    live.add(gid)
    return all(g in live for g in wanted)


@contextlib.asynccontextmanager
async def serving_pipeline(
    settings: Settings,
    mode: PipelineMode = "auto",
    *,
    deps: Deps | None = None,
    launch: Launcher | None = None,
    capture: PromptCapture | None = None,
    names: tuple[str, ...] = ALL,
) -> AsyncIterator[tuple[bool, PromptCapture | None]]:
    """Yields (started_locally, capture). `local` always starts the consumers in this process (with
    `launch`), `external` never does, `auto` starts them when none are deployed for these topics."""
    start = mode == "local" or (mode == "auto" and not await serving_is_deployed(settings))
    if not start:
        await ensure_topics(settings.kafka)
        yield False, capture
        return
    cap = capture or PromptCapture()
    base = deps or Deps(settings)
    async with need_launcher(launch)(settings, names, replace(base, on_prompt=base.on_prompt or cap)):
        yield True, cap


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
