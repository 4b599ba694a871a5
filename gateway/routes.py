"""HTTP routes: authenticate, call one `Gateway` method, shape the response. Nothing else lives here."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse

from gateway.auth import AuthError, Principal
from gateway.models import Answer, ErrorBody, Health, QueryAccepted, QueryRequest, QueryStatus
from gateway.service import Gateway, RejectedError, parse_last_event_id

bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="JWT (HS256, or RS256 via JWKS) with iss, aud, exp, sub, tenant and optional groups.",
)
api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key bound to a tenant.")

_AUTH_HEADER = {"WWW-Authenticate": {"description": "Bearer challenge", "schema": {"type": "string"}}}
_ERRORS: dict[int, dict[str, Any]] = {
    400: {"description": "Malformed request header (e.g. a `Last-Event-ID` this stream never sent)"},
    401: {"description": "Missing, invalid or expired credential", "headers": _AUTH_HEADER},
    404: {"description": "No such query, or not the caller's"},
    413: {"description": "Body over `serving.max_body_bytes` or question over `serving.max_question_chars`"},
    429: {
        "description": (
            "The caller's tenant is over its share (`tenant_inflight`, `tenant_lag`) or the serving plane "
            "is saturated (`inflight`, `lag`)"
        ),
        "headers": {
            "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
        },
    },
    502: {"description": "A serving stage failed the query (`query_failed`; details in the logs)"},
    503: {"description": "The query bus is unavailable"},
    504: {"description": "No answer before the request class's deadline"},
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses (body: ErrorBody)."""
    return {c: {"model": ErrorBody, **_ERRORS[c]} for c in codes}


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def correlation_id(request: Request) -> str:
    """This request's correlation id (set by `gateway.app.CorrelationId`; the query's when it submits)."""
    return getattr(request.state, "correlation_id", "")


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
            401,
            "unauthorized",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            internal=f"auth: {exc}",
        ) from exc


Caller = Annotated[Principal, Depends(principal)]
Gw = Annotated[Gateway, Depends(gateway)]
CorrelationId = Annotated[str, Depends(correlation_id)]
queries = APIRouter(prefix="/v1", tags=["queries"])
ops = APIRouter(tags=["ops"])


@queries.post(
    "/queries",
    status_code=202,
    response_model=QueryAccepted,
    responses=errors(401, 413, 429, 503),
    summary="Submit a query",
)
async def submit(
    body: QueryRequest, p: Caller, gw: Gw, cid: CorrelationId, response: Response
) -> QueryAccepted:
    """Accepts a question; the answer arrives later on the status and stream URLs."""
    _, accepted = await gw.submit(p, body, cid)
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
                "(data: Answer) or `error` (data: QueryError: code, message, correlation id) event with "
                "id `final`. `Last-Event-ID` resumes after that seq (digits) or `final`; anything else: 400."
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
        **errors(400, 401, 404),
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
    after = parse_last_event_id(last_event_id)  # before the stream starts: a bad id is a 400, not a 200
    return EventSourceResponse(gw.events(rec, after), ping=15)


@queries.post(
    "/answer",
    response_model=Answer,
    responses=errors(401, 413, 429, 502, 503, 504),
    summary="Ask and wait for the answer",
)
async def answer(body: QueryRequest, p: Caller, gw: Gw, cid: CorrelationId) -> Answer:
    """Blocking: submits the query and returns the final answer (for simple clients)."""
    rec, _ = await gw.submit(p, body, cid)
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
