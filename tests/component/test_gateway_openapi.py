"""The gateway's OpenAPI document is complete (security, errors, models) and correct (responses match it)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from pydantic import SecretStr

from gateway.app import create_app
from gateway.auth import mint_token
from gateway.hub import AnswerHub
from ragstream.settings import AuthSettings, Settings
from schemas.serving import QueryAnswered, QueryRequested

pytestmark = pytest.mark.component
S = Settings(auth=AuthSettings(jwt_secret=SecretStr(secrets.token_urlsafe(48))))


class Pub:
    def __init__(self) -> None:
        self.events: list[QueryRequested] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, event: QueryRequested) -> None:
        self.events.append(event)


class NoLag:
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def lag(self) -> int:
        return 0


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return create_app(S, publisher=Pub(), hub=AnswerHub(), lag_probe=NoLag()).openapi()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _validator(doc: dict[str, Any], path: str, method: str, status: str) -> Draft202012Validator:
    schema = doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    return Draft202012Validator({**doc, **schema})  # the document as root: #/components/... resolve


def test_document_shape_and_refs(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] and doc["info"]["version"]
    for ref in _refs(doc):
        assert ref.startswith("#/"), ref
        _resolve(doc, ref)
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)  # raises on an invalid schema
    op_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(op_ids) == len(set(op_ids))
    assert set(doc["paths"]) == {
        "/v1/queries",
        "/v1/queries/{query_id}",
        "/v1/queries/{query_id}/stream",
        "/v1/answer",
        "/healthz",
        "/readyz",
        "/metrics",
    }


def test_security_schemes(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["HTTPBearer"]["description"],
    }
    assert schemes["APIKeyHeader"]["type"] == "apiKey" and schemes["APIKeyHeader"]["in"] == "header"
    assert schemes["APIKeyHeader"]["name"] == "X-API-Key"
    for path, item in doc["paths"].items():
        for op in item.values():
            if path.startswith("/v1/"):
                # Either credential: two alternative requirements.
                assert op["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}], path
            else:
                assert "security" not in op, path


@pytest.mark.parametrize(
    ("path", "method", "codes"),
    [
        ("/v1/queries", "post", {"202", "401", "413", "422", "429", "503"}),
        ("/v1/answer", "post", {"200", "401", "413", "422", "429", "502", "503", "504"}),
        ("/v1/queries/{query_id}", "get", {"200", "401", "404", "422"}),
        ("/v1/queries/{query_id}/stream", "get", {"200", "400", "401", "404", "422"}),
    ],
)
def test_every_outcome_is_documented(doc: dict[str, Any], path: str, method: str, codes: set[str]) -> None:
    op = doc["paths"][path][method]
    assert set(op["responses"]) == codes
    for code, resp in op["responses"].items():
        assert resp["description"], (path, code)
        assert resp.get("content"), (path, code)
        if code not in ("200", "202", "422"):
            assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    if "429" in codes:
        assert op["responses"]["429"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    assert "WWW-Authenticate" in op["responses"]["401"]["headers"]


def test_models(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    ok = paths["/v1/queries"]["post"]["responses"]["202"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/QueryAccepted"}
    assert paths["/v1/answer"]["post"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Answer"
    }
    assert paths["/v1/queries/{query_id}"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/QueryStatus"}
    sse = paths["/v1/queries/{query_id}/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    assert set(sse["x-sse-events"]) == {"delta", "answer", "error"}
    assert doc["components"]["schemas"]["DeltaData"]["required"] == ["seq", "text"]
    body = paths["/v1/queries"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/QueryRequest"}
    req = doc["components"]["schemas"]["QueryRequest"]
    assert req["additionalProperties"] is False and req["required"] == ["question"]
    assert set(req["properties"]) == {"question", "request_class", "top_k", "filters", "mode"}
    assert not {"tenant", "tenant_id", "user", "subject", "groups"} & set(req["properties"])
    assert "Citation" in doc["components"]["schemas"]
    assert "text/plain" in next(iter(paths["/metrics"]["get"]["responses"]["200"]["content"]))


async def test_real_responses_match_the_document(doc: dict[str, Any]) -> None:
    pub, hub = Pub(), AnswerHub()
    app = create_app(S, publisher=pub, hub=hub, lag_probe=NoLag())
    auth = {"Authorization": f"Bearer {mint_token(S.auth, 'acme', 'alice')}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c,
    ):
        r = await c.post("/v1/queries", json={"question": "q"}, headers=auth)
        _validator(doc, "/v1/queries", "post", "202").validate(r.json())
        qid = r.json()["query_id"]
        r = await c.get(f"/v1/queries/{qid}", headers=auth)
        _validator(doc, "/v1/queries/{query_id}", "get", "200").validate(r.json())
        hub.dispatch(QueryAnswered(tenant_id="acme", query_id=qid, subject="alice", answer="a"))
        r = await c.get(f"/v1/queries/{qid}", headers=auth)
        _validator(doc, "/v1/queries/{query_id}", "get", "200").validate(r.json())
        for status, resp in (
            ("401", await c.get(f"/v1/queries/{qid}")),
            ("404", await c.get("/v1/queries/nope", headers=auth)),
            ("422", await c.post("/v1/queries", content=b"{", headers=auth)),
            ("413", await c.post("/v1/queries", json={"question": "q" * 10_000}, headers=auth)),
        ):
            assert str(resp.status_code) == status
            path = "/v1/queries" if status in ("413", "422") else "/v1/queries/{query_id}"
            method = "post" if status in ("413", "422") else "get"
            _validator(doc, path, method, status).validate(resp.json())


async def test_docs_served(doc: dict[str, Any]) -> None:
    app = create_app(S, publisher=Pub(), hub=AnswerHub(), lag_probe=NoLag())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        assert (await c.get("/openapi.json")).json() == doc
        assert (await c.get("/docs")).status_code == 200
