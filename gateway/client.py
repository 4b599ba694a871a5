"""A small HTTP client of the gateway (the CLI, the demo, tests and benches use it like any caller would).

`ask` = POST /v1/queries, then GET /v1/queries/{id}/stream: token deltas go to `on_delta` as they arrive;
returns the final answer (or error) plus client-side timings.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


class GatewayError(Exception):
    """The gateway refused the request (status and its `detail`)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass
class SSEvent:
    event: str
    data: str
    id: str | None = None


@dataclass
class AskResult:
    """What a streamed query came to: deltas as received, then the final `answer` or `error` data."""

    query_id: str
    deltas: list[dict[str, Any]] = field(default_factory=list)
    final_event: str = ""
    final: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """One JSON-able object: answer, citations, abstained, query_id, timings (server + client).

        A stream that ended without its final `answer` or `error` event is a failure too (error code
        `stream_incomplete`), never an empty answer."""
        f = self.final
        failed = self.final_event != "answer"
        if failed and not f:
            f = {
                "code": "stream_incomplete",
                "message": "the answer stream ended before its final event",
                "correlation_id": "",
            }
        return {
            "query_id": self.query_id,
            "answer": f.get("answer", "") if not failed else "",
            "abstained": bool(f.get("abstained", False)),
            "citations": f.get("citations", []),
            "error": f if failed else None,
            "model": f.get("model", ""),
            "timings": {**f.get("timings_ms", {}), **self.timings_ms},
        }


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[SSEvent]:
    """Server-Sent Events from text lines (comments and pings skipped)."""
    event, data, eid = "message", [], None
    async for line in lines:
        if not line:
            if data:
                yield SSEvent(event, "\n".join(data), eid)
            event, data, eid = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                eid = value
    if data:
        yield SSEvent(event, "\n".join(data), eid)


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        raise GatewayError(resp.status_code, detail if isinstance(detail, str) else json.dumps(detail))


class GatewayClient:
    """Bearer-token client of one gateway base URL."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 330.0) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, connect=5.0),
        )

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def submit(self, question: str, **options: Any) -> dict[str, Any]:
        """POST /v1/queries -> the 202 body."""
        resp = await self.http.post("/v1/queries", json={"question": question, **options})
        _raise_for(resp)
        return resp.json()

    async def stream(self, query_id: str) -> AsyncIterator[SSEvent]:
        """GET /v1/queries/{id}/stream as parsed events."""
        async with self.http.stream("GET", f"/v1/queries/{query_id}/stream") as resp:
            if resp.status_code >= 400:
                await resp.aread()
                _raise_for(resp)
            async for ev in parse_sse(resp.aiter_lines()):
                yield ev

    async def ask(
        self, question: str, on_delta: Callable[[str], None] | None = None, **options: Any
    ) -> AskResult:
        """Submit, stream to the end; timings: submit, first delta and total, as the client saw them."""
        t0 = time.perf_counter()
        accepted = await self.submit(question, **options)
        result = AskResult(accepted["query_id"])
        result.timings_ms["client_submit"] = (time.perf_counter() - t0) * 1000
        async for ev in self.stream(result.query_id):
            if ev.event == "delta":
                delta = json.loads(ev.data)
                if not result.deltas:
                    result.timings_ms["client_first_delta"] = (time.perf_counter() - t0) * 1000
                result.deltas.append(delta)
                if on_delta is not None:
                    on_delta(delta["text"])
            elif ev.event in ("answer", "error"):
                result.final_event = ev.event
                result.final = json.loads(ev.data)
                break
        result.timings_ms["client_total"] = (time.perf_counter() - t0) * 1000
        return result
