"""HTTP routes: authenticate, call one `Gateway` method, shape the response. Nothing else lives here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse

from gateway.auth import AuthError, Principal
from gateway.models import Answer, ErrorBody, Health, QueryAccepted, QueryRequest, QueryStatus
from gateway.service import Gateway, RejectedError

bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="JWT (HS256, or RS256 via JWKS) with iss, aud, exp, sub, tenant and optional groups.",
)
api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key bound to a tenant.")

_AUTH_HEADER = {"WWW-Authenticate": {"description": "Bearer challenge", "schema": {"type": "string"}}}
_ERRORS: dict[int, dict[str, Any]] = {
    401: {"description": "Missing, invalid or expired credential", "headers": _AUTH_HEADER},
    404: {"description": "No such query, or not the caller's"},
    413: {"description": "Body over `serving.max_body_bytes` or question over `serving.max_question_chars`"},
    429: {
        "description": "Serving plane saturated (in-flight queries or consumer lag over threshold)",
        "headers": {
            "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
        },
    },
    502: {"description": "A serving stage failed the query"},
    503: {"description": "The query bus is unavailable"},
    504: {"description": "No answer before the request class's deadline"},
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses (body: ErrorBody)."""
    return {c: {"model": ErrorBody, **_ERRORS[c]} for c in codes}


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    key: Annotated[str | None, Depends(api_key)],
) -> Principal:
    """The verified caller (401 otherwise). Sync: a JWKS fetch may block, so it runs in the threadpool."""
    try:
        return gateway(request).auth.authenticate(creds.credentials if creds else None, key)
    except AuthError as exc:
        raise RejectedError(
            401, str(exc), "unauthorized", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from exc


Caller = Annotated[Principal, Depends(principal)]
Gw = Annotated[Gateway, Depends(gateway)]
queries = APIRouter(prefix="/v1", tags=["queries"])
ops = APIRouter(tags=["ops"])


@queries.post(
    "/queries",
    status_code=202,
    response_model=QueryAccepted,
    responses=errors(401, 413, 429, 503),
    summary="Submit a query",
)
async def submit(body: QueryRequest, p: Caller, gw: Gw, response: Response) -> QueryAccepted:
    """Accepts a question; the answer arrives later on the status and stream URLs."""
    _, accepted = await gw.submit(p, body)
    response.headers["Location"] = accepted.status_url
    return accepted


@queries.get(
    "/queries/{query_id}", response_model=QueryStatus, responses=errors(401, 404), summary="Query status"
)
async def status(query_id: str, p: Caller, gw: Gw) -> QueryStatus:
    """Pending (with the text streamed so far), answered (with the answer) or failed (with the reason)."""
    return gw.status(gw.record(p, query_id))


@queries.get(
    "/queries/{query_id}/stream",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": (
                "Server-Sent Events: `delta` events (data: DeltaData, id: seq), then one `answer` "
                "(data: Answer) or `error` (data: QueryError) event with id `final`."
            ),
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "x-sse-events": {
                        "delta": {"$ref": "#/components/schemas/DeltaData"},
                        "answer": {"$ref": "#/components/schemas/Answer"},
                        "error": {"$ref": "#/components/schemas/QueryError"},
                    },
                }
            },
        },
        **errors(401, 404),
    },
    summary="Stream tokens, then the answer",
)
async def stream(
    query_id: str,
    p: Caller,
    gw: Gw,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventSourceResponse:
    """Replays what was already streamed (after `Last-Event-ID`), then follows the query to its end."""
    rec = gw.record(p, query_id)
    return EventSourceResponse(gw.events(rec, last_event_id), ping=15)


@queries.post(
    "/answer",
    response_model=Answer,
    responses=errors(401, 413, 429, 502, 503, 504),
    summary="Ask and wait for the answer",
)
async def answer(body: QueryRequest, p: Caller, gw: Gw) -> Answer:
    """Blocking: submits the query and returns the final answer (for simple clients)."""
    rec, _ = await gw.submit(p, body)
    return await gw.answer(rec)


@ops.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    return Health(status="ok")


@ops.get("/readyz", response_model=Health, responses={503: {"model": Health}}, summary="Readiness")
async def readyz(gw: Gw, response: Response) -> Health:
    """200 when the answer hub follows the answers topic and the publisher is started; else 503."""
    checks = gw.ready()
    ok = all(checks.values())
    response.status_code = 200 if ok else 503
    return Health(status="ok" if ok else "starting", checks=checks)


@ops.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
