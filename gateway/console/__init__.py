"""The web console: static files served by the gateway at `/console` (no CDN, nothing fetched from
elsewhere). Sign in with an API key or token; ask through the OpenAI-compatible API with the answer
streaming in and its citations (document, version, chunk); the documents, dead-letter, generation,
eval-report and review pages read `/v1/console/*` (`gateway.console_api`). Responses carry a strict
Content-Security-Policy (same origin only, no inline script; images also from `blob:`, for the eval plots
fetched with the credential) and `no-referrer`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
PATH = "/console"
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' blob:; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),
]


class SecureHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tag(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        await self.app(scope, receive, tag)


def mount(app: FastAPI) -> None:
    """Serve the console's files at `/console/` (`/console` redirects there)."""
    app.mount(PATH, SecureHeaders(StaticFiles(directory=STATIC, html=True)), name="console")
