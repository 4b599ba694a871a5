"""MCP server (the official `mcp` SDK): tools `search` and `ask` over the caller's authorized documents.

Two transports, one set of tools:
- Streamable HTTP at `/mcp` on the gateway (`mount`): stateless, JSON responses. `CredentialGate` refuses a
  request without a valid credential (401, the native error body) before the MCP layer, and every tool call
  verifies the request's own `Authorization: Bearer` (JWT or API key) or `X-API-Key` again, so tenant, user
  and groups come only from the credential. The tools go through the native query path
  (`Gateway.submit` -> QueryRequested -> the answer hub): the ACL filter inside retrieval applies as for
  `/v1/answer`.
- stdio (`ragstream mcp`): the same tools, each call forwarded to a running gateway's `/v1/answer` with the
  token given at start (`remote_asker`).

`search` returns the passages the answer was built from, as citations (citation_id, document_id, title,
source_version, chunk_id) with the answer's sentences that cite each one as `snippet`, plus the ids of every
chunk that entered the prompt; the answers topic carries no passage text, so a passage not cited has no
snippet. `ask` returns the answer with its citations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import anyio
import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import metrics
from gateway.auth import Principal
from gateway.models import ErrorBody, ErrorInfo, QueryRequest
from gateway.openai_api import authenticate  # the same bearer rule: a JWT, else an API key
from gateway.service import Gateway, RejectedError
from schemas.serving import QueryAnswered, RequestClass

log = logging.getLogger(__name__)
PATH = "/mcp"
_MARKER = re.compile(r"\[(\d{1,3})\]")
CITATION_FIELDS = ("citation_id", "document_id", "title", "source_version", "chunk_id")

# (question, request_class, top_k) -> the answer as a dict (Answer fields, plus context_chunk_ids)
Ask = Callable[[str, RequestClass, int | None], Awaitable[dict[str, Any]]]
AskerFor = Callable[[Mapping[str, str] | None], Awaitable[Ask]]


def _credential(headers: Mapping[str, str] | None) -> tuple[str | None, str | None]:
    """(bearer, api key) from request headers (case-insensitive)."""
    low = {k.lower(): v for k, v in (headers or {}).items()}
    auth = low.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    bearer = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return bearer, low.get("x-api-key") or None


async def verify(gw: Gateway, headers: Mapping[str, str] | None) -> Principal:
    """The verified caller of this request (RejectedError 401 otherwise); a JWKS fetch runs in a thread."""
    bearer, key = _credential(headers)
    return await anyio.to_thread.run_sync(authenticate, gw, bearer, key)


def _tool_error(exc: RejectedError, correlation_id: str) -> ToolError:
    info = exc.info(correlation_id)
    if exc.internal:
        log.info("mcp call refused: %s (correlation %s): %s", exc.reason, info.correlation_id, exc.internal)
    metrics.rejected(exc.reason)
    return ToolError(f"{info.code}: {info.message} (correlation_id {info.correlation_id})")


def local_asker(gateway: Callable[[], Gateway]) -> AskerFor:
    """Tools served by this gateway: verify the request's credential, then the native query path."""

    async def asker_for(headers: Mapping[str, str] | None) -> Ask:
        gw = gateway()
        try:
            p = await verify(gw, headers)
        except RejectedError as exc:
            raise _tool_error(exc, "") from exc

        async def ask(question: str, request_class: RequestClass, top_k: int | None) -> dict[str, Any]:
            cid = ""
            try:
                req = QueryRequest(question=question, request_class=request_class, top_k=top_k)
                rec, _ = await gw.submit(p, req)
                cid = rec.correlation_id
                answer = await gw.answer(rec)
            except RejectedError as exc:
                raise _tool_error(exc, cid) from exc
            final = rec.final
            ctx_ids = list(final.context_chunk_ids) if isinstance(final, QueryAnswered) else []
            return {**answer.model_dump(mode="json"), "correlation_id": cid, "context_chunk_ids": ctx_ids}

        return ask

    return asker_for


def remote_asker(base_url: str, token: str, timeout_s: float = 330.0) -> AskerFor:
    """Tools forwarded to a running gateway's `POST /v1/answer` with `token` (a JWT or an API key)."""
    header = {"Authorization": f"Bearer {token}"} if token.count(".") == 2 else {"X-API-Key": token}

    async def asker_for(_headers: Mapping[str, str] | None) -> Ask:
        async def ask(question: str, request_class: RequestClass, top_k: int | None) -> dict[str, Any]:
            body: dict[str, Any] = {"question": question, "request_class": request_class}
            if top_k is not None:
                body["top_k"] = top_k
            async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers=header) as http:
                try:
                    resp = await http.post("/v1/answer", json=body)
                except httpx.HTTPError as exc:
                    raise ToolError(f"unavailable: the gateway at {base_url} cannot be reached") from exc
            if resp.status_code >= 400:
                try:
                    err = resp.json().get("error") or {}
                except ValueError:
                    err = {}
                code = err.get("code", f"http_{resp.status_code}")
                raise ToolError(
                    f"{code}: {err.get('message', 'request refused')} "
                    f"(correlation_id {err.get('correlation_id', resp.headers.get('x-correlation-id', ''))})"
                )
            return {**resp.json(), "correlation_id": resp.headers.get("x-correlation-id", "")}

        return ask

    return asker_for


def _citation_fields(c: dict[str, Any]) -> dict[str, str]:
    return {k: str(c.get(k, "")) for k in CITATION_FIELDS}


def snippets(answer: str, citation_id: str) -> str:
    """The answer's text that `[citation_id]` closes (from the previous marker, or the start, to it)."""
    parts: list[str] = []
    start, last = 0, ""
    for m in _MARKER.finditer(answer):
        segment = answer[start : m.start()].strip() or last  # adjacent markers cite the same text
        if m.group(1) == citation_id and segment and segment not in parts:
            parts.append(segment)
        start, last = m.end(), segment
    return " ".join(parts)


def build_server(asker_for: AskerFor, *, name: str = "ragstream") -> MCPServer:
    """The MCP server with tools `search` and `ask`; `asker_for(headers)` checks the caller every call."""
    # The SDK calls logging.basicConfig (a rich handler on the root logger) unless the root has a handler:
    # the gateway's own logging configuration is left as it is.
    root = logging.getLogger()
    guard = None if root.handlers else logging.NullHandler()
    if guard is not None:
        root.addHandler(guard)
    try:
        server: MCPServer = MCPServer(
            name=name,
            log_level="WARNING",
            instructions=(
                "Search and ask over the documents your credential may read (tenant, user and groups come "
                "from the credential only). Every answer cites document, version and chunk."
            ),
        )
    finally:
        if guard is not None:
            root.removeHandler(guard)

    @server.tool(description="Find the authorized passages for a query, with citation data.")
    async def search(query: str, ctx: Context, top_k: int | None = None) -> dict[str, Any]:
        ask = await asker_for(ctx.headers)
        answer = await ask(query, "interactive", top_k)
        passages = [
            {**_citation_fields(c), "snippet": snippets(answer.get("answer", ""), str(c.get("citation_id")))}
            for c in answer.get("citations", [])
        ]
        return {
            "query": query,
            "passages": passages,
            "context_chunk_ids": list(answer.get("context_chunk_ids", [])),
            "abstained": bool(answer.get("abstained", False)),
            "correlation_id": answer.get("correlation_id", ""),
        }

    @server.tool(description="Answer a question from the authorized documents, with citations.")
    async def ask(
        question: str, ctx: Context, request_class: RequestClass = "interactive", top_k: int | None = None
    ) -> dict[str, Any]:
        asker = await asker_for(ctx.headers)
        answer = await asker(question, request_class, top_k)
        return {
            "answer": answer.get("answer", ""),
            "abstained": bool(answer.get("abstained", False)),
            "citations": [_citation_fields(c) for c in answer.get("citations", [])],
            "query_id": answer.get("query_id", ""),
            "correlation_id": answer.get("correlation_id", ""),
            "usage": {
                "prompt_tokens": int(answer.get("prompt_tokens", 0)),
                "completion_tokens": int(answer.get("completion_tokens", 0)),
            },
        }

    return server


class McpEndpoint:
    """The `/mcp` ASGI endpoint on the gateway: refuses a request without a valid credential (401 with
    the native error body and `WWW-Authenticate`) before the MCP layer reads it (the tools verify it again
    on every call), then hands it to the SDK's streamable-HTTP app of the running lifespan.

    Stateless (any replica answers any call), JSON responses; no DNS-rebinding host check, since every
    request needs a bearer credential (no cookie or ambient authority). A fresh MCP server per lifespan
    (the SDK's session manager runs once)."""

    def __init__(self, gateway: Callable[[], Gateway]) -> None:
        self.gateway = gateway
        self._app: ASGIApp | None = None

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        server = build_server(local_asker(self.gateway))
        starlette_app = server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        route = next(r for r in starlette_app.routes if getattr(r, "path", None) == PATH)
        started, stop = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            # The SDK's task group lives in this one task: a lifespan may be entered and left in two tasks.
            async with server.session_manager.run():
                self._app = route.app  # type: ignore[attr-defined]
                started.set()
                try:
                    await stop.wait()
                finally:
                    self._app = None

        task = asyncio.create_task(hold(), name="mcp-session-manager")
        ready = asyncio.create_task(started.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # start-up failed: raise its error
        try:
            yield
        finally:
            stop.set()
            await task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        cid = scope.get("state", {}).get("correlation_id", "")
        try:
            if self._app is None:
                raise RejectedError(503, "unavailable", internal="mcp endpoint not started")
            await verify(self.gateway(), headers)
        except RejectedError as exc:
            log.info("mcp request refused (correlation %s): %s", cid, exc.internal)
            metrics.rejected(exc.reason)
            body = ErrorBody.of(ErrorInfo.of(exc.reason, cid)).model_dump_json().encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": exc.status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)


def mount(routes: list[Any], gateway: Callable[[], Gateway]) -> McpEndpoint:
    """Add `/mcp` to `routes`; the app's lifespan runs `endpoint.run()`."""
    endpoint = McpEndpoint(gateway)
    routes.append(Route(PATH, endpoint=endpoint, include_in_schema=False))
    return endpoint
