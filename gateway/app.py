"""The gateway's FastAPI application: settings (+ optional fakes) in, an ASGI app out.

`create_app(settings)` wires the Kafka publisher, the answer hub and the lag probe; tests pass in-memory
ones instead. Lifespan starts them (the hub is positioned at the end of the answers topic before the first
request is accepted) and stops them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import console, mcp_server, metrics, openai_api
from gateway.backpressure import KafkaLagProbe, LagProbe
from gateway.console_api import console_api
from gateway.console_backend import ConsoleBackend, LiveConsoleBackend
from gateway.hub import AnswerHub, KafkaAnswerHub
from gateway.middleware import BodyLimit, RequestMetrics
from gateway.models import DeltaData, ErrorBody, ErrorInfo
from gateway.publisher import KafkaQueryPublisher, QueryPublisher
from gateway.review import KafkaReviewQueue, MemoryReviewQueue, ReviewQueue
from gateway.routes import ops, queries
from gateway.service import Gateway, RejectedError
from ragstream.settings import Settings

log = logging.getLogger(__name__)
CORRELATION_HEADER = "X-Correlation-ID"

DESCRIPTION = """\
Ask questions over your tenant's documents. A query is an event: `POST /v1/queries` publishes it and answers
202; follow it with `GET /v1/queries/{id}` or stream it with `GET /v1/queries/{id}/stream` (Server-Sent
Events). `POST /v1/answer` waits for the answer. Tenant, user and groups come only from the credential
(bearer JWT or `X-API-Key`); a caller sees only its own queries.
"""


def _version() -> str:
    try:
        return version("ragstream")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


class CorrelationId:
    """Gives every HTTP request a fresh correlation id (`request.state.correlation_id`, the
    `X-Correlation-ID` response header). Generated here, never taken from the client: it names log
    lines and, for a submitted query, every stage's events."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = str(uuid.uuid4())
        scope.setdefault("state", {})["correlation_id"] = cid

        async def tag(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-correlation-id"]
                message = {**message, "headers": [*headers, (b"x-correlation-id", cid.encode())]}
            await send(message)

        await self.app(scope, receive, tag)


def _cid(request: Request) -> str:
    return getattr(request.state, "correlation_id", "") or str(uuid.uuid4())


async def _rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RejectedError)
    metrics.rejected(exc.reason)
    info = exc.info(_cid(request))
    if exc.internal:
        level = logging.WARNING if exc.status >= 500 else logging.INFO
        log.log(
            level,
            "%s %s -> %d %s (correlation %s): %s",
            request.method,
            request.url.path,
            exc.status,
            exc.reason,
            info.correlation_id,
            exc.internal,
        )
    if openai_api.is_openai_path(request.url.path):
        return openai_api.error_response(exc.status, info, exc.headers)
    body = ErrorBody.of(info).model_dump(mode="json")
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    metrics.rejected("invalid")
    if openai_api.is_openai_path(request.url.path):
        return openai_api.invalid_response(exc, _cid(request))
    return await request_validation_exception_handler(request, exc)


async def _unexpected(request: Request, exc: Exception) -> Response:
    """Anything unhandled: a 500 in the error shape; the exception goes to the log only."""
    cid = _cid(request)
    log.error("%s %s failed (correlation %s)", request.method, request.url.path, cid, exc_info=exc)
    metrics.rejected("internal")
    if openai_api.is_openai_path(request.url.path):
        return openai_api.error_response(500, ErrorInfo.of("internal", cid), {CORRELATION_HEADER: cid})
    body = ErrorBody.of(ErrorInfo.of("internal", cid)).model_dump(mode="json")
    return JSONResponse(body, status_code=500, headers={CORRELATION_HEADER: cid})


def create_app(
    settings: Settings,
    *,
    publisher: QueryPublisher | None = None,
    hub: AnswerHub | None = None,
    lag_probe: LagProbe | None = None,
    lag_interval_s: float = 2.0,
    console_backend: ConsoleBackend | None = None,
    reviews: ReviewQueue | None = None,
) -> FastAPI:
    """The gateway app; Kafka-backed collaborators unless given (a None lag probe means Kafka's).
    The console's pages read `console_backend` (default: Weaviate, Kafka, the registry, eval runs on
    disk) and `reviews` (default: the review topics)."""

    def build() -> Gateway:
        # Built in the lifespan: aiokafka clients must be created inside the running event loop.
        gw = Gateway(
            settings,
            publisher or KafkaQueryPublisher(settings),
            hub or KafkaAnswerHub(settings),
            lag_probe or KafkaLagProbe(settings),
        )
        gw.admission.interval_s = lag_interval_s
        return gw

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw = app.state.gateway = build()
        live = LiveConsoleBackend(settings) if console_backend is None else None
        app.state.console_backend = console_backend or live
        # An in-memory answer hub (tests) gets an in-memory review queue; the Kafka one follows in the
        # background and never fails the gateway (its page answers 503 until it is ready).
        queue = app.state.reviews = reviews or (
            KafkaReviewQueue(settings)
            if hub is None
            else MemoryReviewQueue(settings.console.review_max_pending)
        )
        await gw.start()
        await queue.start()
        try:
            async with mcp.run():
                yield
        finally:
            await queue.stop()
            await gw.stop()
            if live is not None:
                live.close()

    app = FastAPI(
        title="ragstream gateway",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "queries", "description": "Ask, follow and stream queries"},
            {"name": "ops", "description": "Health, readiness and metrics"},
        ],
    )
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document plus the SSE `delta` data model (no route returns it as JSON)."""
        if app.openapi_schema is None:
            doc = base_openapi()
            doc["components"]["schemas"]["DeltaData"] = DeltaData.model_json_schema()
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    app.include_router(queries)
    app.include_router(ops)
    app.include_router(openai_api.openai_router)
    app.include_router(console_api)
    mcp = mcp_server.mount(app.router.routes, lambda: app.state.gateway)
    console.mount(app)
    app.add_exception_handler(RejectedError, _rejected)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BodyLimit, max_bytes=settings.serving.max_body_bytes)
    app.add_middleware(openai_api.OversizeShape)
    app.add_middleware(RequestMetrics)
    app.add_middleware(CorrelationId)
    return app
