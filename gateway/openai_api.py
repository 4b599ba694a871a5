"""OpenAI-compatible surface of the gateway: `GET /v1/models` and `POST /v1/chat/completions`.

Same query path as the native API (`Gateway.submit` -> QueryRequested -> the answer hub): no second way to
retrieval. The credential is the `Authorization: Bearer` the OpenAI SDKs send, either a JWT or an API key
(or `X-API-Key`); tenant, user and groups come only from it, never from the body (`user`, `tenant` and any
other body field are ignored for identity).

- The question is the last `user` message. Earlier `user` turns (the last `HISTORY_TURNS`, at most
  `HISTORY_CHARS` characters) travel as `QuerySpec.history`: query rewrite appends their salient terms
  when the question is a follow-up (`ragstream.core.rewrite.with_history`). Assistant, system and tool
  turns are not sent: the prompt is built from the question and the authorized passages only.
- Request class: header `X-Request-Class` (`interactive` | `batch`), else the model suffix
  (`ragstream:batch`), else `interactive`.
- Citations: `annotations` of type `url_citation` on the message (and on the final stream chunk's delta),
  plus a `citations` list (citation_id, document_id, title, source_version, chunk_id) on the completion and
  the final chunk. A citation's URL is `ragstream://documents/{document_id}?version=..&chunk=..`.
- Errors: OpenAI's shape `{"error": {message, type, code, param, correlation_id}}`, the native API's
  status codes (401, 404, 413, 422, 429 + Retry-After, 502, 503, 504).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth import AuthError, Principal
from gateway.hub import QueryRecord
from gateway.models import ErrorInfo, QueryRequest
from gateway.routes import CorrelationId, Gw, api_key, bearer, gateway
from gateway.service import Gateway, RejectedError
from ragstream.core.rewrite import confine_history
from schemas.serving import AnswerDelta, Citation, QueryAnswered, RequestClass

log = logging.getLogger(__name__)
MODEL = "ragstream"
CLASSES: tuple[RequestClass, ...] = ("interactive", "batch")
MODELS = (MODEL, *(f"{MODEL}:{c}" for c in CLASSES))
PATHS = ("/v1/models", "/v1/chat/completions")
MAX_MESSAGES = 64
HISTORY_TURNS = 4
HISTORY_CHARS = 1000
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def is_openai_path(path: str) -> bool:
    """Requests whose errors take OpenAI's shape."""
    return path in PATHS


def error_body(status: int, info: ErrorInfo, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object, with our code and correlation id (never internals)."""
    return {
        "error": {
            "message": info.message,
            "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "code": info.code,
            "param": param,
            "correlation_id": info.correlation_id,
        }
    }


def error_response(
    status: int, info: ErrorInfo, headers: dict[str, str] | None = None, param: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, info, param), status_code=status, headers=headers)


def invalid_response(exc: RequestValidationError, correlation_id: str) -> JSONResponse:
    """A 422 in OpenAI's shape: the first offending field as `param`, pydantic's short message."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    msg = str(first.get("msg", ""))[:200]
    info = ErrorInfo.of("bad_request", correlation_id, f"invalid request: {msg}" if msg else None)
    return error_response(422, info, param=".".join(loc) or None)


class OversizeShape:
    """Wraps the body-size limit: its 413 on an OpenAI path is re-sent in OpenAI's error shape (with the
    request's correlation id); every other response passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_openai_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        held: Message | None = None

        async def reshape(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] == 413:
                held = message  # decide on the body: the route's own 413 is already in OpenAI's shape
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            start, held = held, None
            try:
                ours = "error" in json.loads(message.get("body", b"") or b"{}")
            except ValueError:
                ours = False
            if ours:
                await send(start)
                await send(message)
                return
            cid = scope.get("state", {}).get("correlation_id", "")
            body = json.dumps(error_body(413, ErrorInfo.of("too_large", cid))).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, reshape)


def openai_principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    key: Annotated[str | None, Depends(api_key)],
) -> Principal:
    """The verified caller: a bearer that looks like a JWT is verified as one, any other bearer as an API
    key (the OpenAI SDKs send keys as `Authorization: Bearer`); `X-API-Key` too. 401 otherwise."""
    return authenticate(gateway(request), creds.credentials if creds else None, key)


def authenticate(gw: Gateway, bearer_value: str | None, key: str | None) -> Principal:
    """Bearer (JWT or API key) or X-API-Key -> Principal; RejectedError 401 otherwise."""
    try:
        if bearer_value and bearer_value.count(".") != 2:
            return gw.auth.verify_api_key(bearer_value)
        return gw.auth.authenticate(bearer_value, key)
    except AuthError as exc:
        raise RejectedError(
            401,
            "unauthorized",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            internal=f"auth: {exc}",
        ) from exc


OpenAICaller = Annotated[Principal, Depends(openai_principal)]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content or () if p.type == "text")


class ChatCompletionRequest(BaseModel):
    """The fields this gateway reads; any other OpenAI parameter is accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = MODEL
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: dict[str, Any] | None = None


def request_class(model: str, header: str | None) -> RequestClass:
    """The header wins, then the model suffix; an unknown model is a 404, a bad header a 400."""
    if model not in MODELS:
        raise RejectedError(404, "model_not_found", internal=f"model {model[:64]!r}")
    if header:
        if header not in CLASSES:
            raise RejectedError(400, "bad_request", message="X-Request-Class must be interactive or batch")
        return header  # type: ignore[return-value]
    _, _, suffix = model.partition(":")
    return suffix or "interactive"  # type: ignore[return-value]


def question_of(body: ChatCompletionRequest) -> str:
    """The last user message's text (400 when there is none or it is blank)."""
    for m in reversed(body.messages):
        if m.role == "user":
            text = m.text()
            if text.strip():
                return text
            break
    raise RejectedError(400, "bad_request", message="the last user message must have text")


def history_of(body: ChatCompletionRequest) -> tuple[str, ...]:
    """Earlier user turns (before the last user message), bounded in count and characters."""
    last = max(i for i, m in enumerate(body.messages) if m.role == "user")
    turns = [m.text() for m in body.messages[:last] if m.role == "user"]
    return confine_history(turns, HISTORY_TURNS, HISTORY_CHARS)


def citation_url(c: Citation) -> str:
    query = urlencode({"version": c.source_version, "chunk": c.chunk_id})
    return f"ragstream://documents/{quote(c.document_id, safe='')}?{query}"


def citations_list(citations: tuple[Citation, ...] | list[Citation]) -> list[dict[str, str]]:
    return [
        {
            "citation_id": c.citation_id,
            "document_id": c.document_id,
            "title": c.title,
            "source_version": c.source_version,
            "chunk_id": c.chunk_id,
        }
        for c in citations
    ]


def annotations(answer: str, citations: tuple[Citation, ...] | list[Citation]) -> list[dict[str, Any]]:
    """`url_citation` annotations; the indices span the citation's first `[n]` marker in the answer
    (the end of the text when the marker is absent)."""
    out: list[dict[str, Any]] = []
    for c in citations:
        marker = f"[{c.citation_id}]"
        start = answer.find(marker)
        start, end = (start, start + len(marker)) if start >= 0 else (len(answer), len(answer))
        out.append(
            {
                "type": "url_citation",
                "url_citation": {
                    "url": citation_url(c),
                    "title": c.title or c.document_id,
                    "start_index": start,
                    "end_index": end,
                },
            }
        )
    return out


def _usage(ev: QueryAnswered) -> dict[str, int]:
    return {
        "prompt_tokens": ev.prompt_tokens,
        "completion_tokens": ev.completion_tokens,
        "total_tokens": ev.prompt_tokens + ev.completion_tokens,
    }


def _extras(rec: QueryRecord, ev: QueryAnswered) -> dict[str, Any]:
    return {
        "query_id": rec.query_id,
        "correlation_id": rec.correlation_id,
        "abstained": ev.abstained,
        "generation": ev.generation,
        "model": ev.model,
    }


def completion(rec: QueryRecord, ev: QueryAnswered, model: str, created: int) -> dict[str, Any]:
    """A `chat.completion` object for a final answer."""
    return {
        "id": f"chatcmpl-{rec.query_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": ev.answer,
                    "refusal": None,
                    "annotations": annotations(ev.answer, ev.citations),
                },
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(ev),
        "citations": citations_list(ev.citations),
        "ragstream": _extras(rec, ev),
    }


def _chunk(rec: QueryRecord, model: str, created: int, delta: dict[str, Any], **extra: Any) -> str:
    finish = extra.pop("finish_reason", None)
    body = {
        "id": f"chatcmpl-{rec.query_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        **extra,
    }
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


async def stream_chunks(gw: Gateway, rec: QueryRecord, model: str, created: int) -> AsyncIterator[str]:
    """`chat.completion.chunk` SSE: the role, one chunk per token delta, then a final chunk with
    finish_reason, annotations, citations and usage; `[DONE]`. A failed query ends with an OpenAI error
    object (code and correlation id only), which the SDKs raise as APIError."""
    yield _chunk(rec, model, created, {"role": "assistant", "content": ""})
    streamed = ""
    try:
        async for ev in gw.hub.follow(rec):
            if isinstance(ev, AnswerDelta):
                streamed += ev.text
                yield _chunk(rec, model, created, {"content": ev.text})
            elif isinstance(ev, QueryAnswered):
                # The final text normally equals the streamed one; send what is missing when it extends it.
                rest = ev.answer[len(streamed) :] if ev.answer.startswith(streamed) else ""
                delta: dict[str, Any] = {"annotations": annotations(ev.answer, ev.citations)}
                if rest:
                    delta["content"] = rest
                yield _chunk(
                    rec,
                    model,
                    created,
                    delta,
                    finish_reason="stop",
                    usage=_usage(ev),
                    citations=citations_list(ev.citations),
                    ragstream={**_extras(rec, ev), "answer": ev.answer},
                )
            else:
                err: ErrorInfo = gw.failure(rec, ev)
                status = 504 if err.code == "deadline_exceeded" else 502
                yield f"data: {json.dumps(error_body(status, err))}\n\n"
    except Exception:
        # The status line is already sent: end the stream with an error object, details in the log.
        log.exception("openai stream of query %s broke (correlation %s)", rec.query_id, rec.correlation_id)
        info = ErrorInfo.of("internal", rec.correlation_id or rec.query_id)
        yield f"data: {json.dumps(error_body(500, info))}\n\n"
    yield "data: [DONE]\n\n"


openai_router = APIRouter(prefix="/v1", tags=["openai"], include_in_schema=False)


@openai_router.get("/models")
async def list_models(p: OpenAICaller) -> dict[str, Any]:
    """What the caller may ask: `ragstream` (the live generation of the caller's tenant) and one model per
    request class."""
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": p.tenant_id} for m in MODELS],
    }


@openai_router.get("/models/{model_id}")
async def get_model(model_id: str, p: OpenAICaller) -> dict[str, Any]:
    if model_id not in MODELS:
        raise RejectedError(404, "model_not_found")
    return {"id": model_id, "object": "model", "created": 0, "owned_by": p.tenant_id}


@openai_router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    p: OpenAICaller,
    gw: Gw,
    cid: CorrelationId,
    x_request_class: Annotated[str | None, Header(alias="X-Request-Class")] = None,
) -> dict[str, Any] | StreamingResponse:
    """Ask with the last user message through the native query path; the answer as a chat completion."""
    rc = request_class(body.model, x_request_class)
    question = question_of(body)
    req = QueryRequest(question=question, request_class=rc)
    rec, _ = await gw.submit(p, req, cid, history=history_of(body))
    created = int(time.time())
    if body.stream:
        return StreamingResponse(
            stream_chunks(gw, rec, body.model, created),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    await gw.answer(rec)  # raises 502 / 504 (OpenAI shape via the app's handler)
    final = rec.final
    assert isinstance(final, QueryAnswered)
    return completion(rec, final, body.model, created)


__all__ = [
    "MODELS",
    "ChatCompletionRequest",
    "error_body",
    "error_response",
    "invalid_response",
    "is_openai_path",
    "openai_router",
]
