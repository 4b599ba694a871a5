"""`ragstream gateway serve`, `ragstream token` and `ragstream ask`: the query API and its simplest client.

`ask` goes through the gateway over HTTP like any client: to `--url` when a gateway answers there, else to
one started in this process on a free port (the serving workers must be running somewhere:
`ragstream worker retrieval|rerank|generation`, or the demo's in-process pipeline).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import typer

from application.cli.common import console, emit_json, err, settings
from ragstream.settings import Settings

DEFAULT_PORT = 18000
DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"

app = typer.Typer(help="The query gateway (HTTP API over Kafka).", no_args_is_help=True)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address"),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="Port"),
) -> None:
    """Serve the gateway with uvicorn until interrupted."""
    import uvicorn

    from gateway.app import create_app
    from gateway.auth import AuthConfigError

    try:
        app_ = create_app(settings())
    except AuthConfigError as exc:  # unsafe or empty auth configuration: refuse to start, say why
        err.print(f"[red]gateway refused to start:[/] {exc}")
        raise typer.Exit(2) from exc
    uvicorn.run(app_, host=host, port=port, log_level="info")


def token(
    tenant: str = typer.Option(..., "--tenant", help="Tenant the token is bound to"),
    user: str = typer.Option(..., "--user", help="Subject (user id)"),
    group: list[str] = typer.Option([], "--group", "-g", help="Group (repeatable)"),
    ttl: int | None = typer.Option(None, "--ttl", help="Seconds until expiry (default auth.token_ttl_s)"),
) -> None:
    """Mint an HS256 token signed with the local development key; prints it as the last line."""
    from gateway.auth import mint_token

    sys.stdout.write(mint_token(settings().auth, tenant, user, group, ttl) + "\n")


def _gateway_up(url: str) -> bool:
    try:
        return httpx.get(url.rstrip("/") + "/readyz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


async def ask_via_gateway(
    s: Settings,
    question: str,
    *,
    tenant: str,
    user: str,
    groups: Sequence[str] = (),
    url: str | None = None,
    request_class: str = "batch",
    on_delta: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Ask over HTTP with a freshly minted token; in-process gateway on a free port when `url` is None.

    Returns answer, citations (dicts), abstained, query_id, error, model and timings (server stages plus
    client-side submit / first delta / total, ms). `batch` by default: a local CPU model can need longer
    than the interactive deadline.
    """
    from gateway.auth import mint_token
    from gateway.client import GatewayClient

    token_ = mint_token(s.auth, tenant, user, groups)

    async def run(base: str) -> dict[str, Any]:
        async with GatewayClient(base, token_) as client:
            result = await client.ask(question, on_delta, request_class=request_class)
        return result.as_dict()

    if url is not None:
        return await run(url)
    from gateway.app import create_app
    from gateway.server import serve_in_process

    async with serve_in_process(create_app(s)) as base:
        return await run(base)


def ask(
    question: str = typer.Argument(..., help="The question"),
    tenant: str = typer.Option(..., "--tenant"),
    user: str = typer.Option(..., "--user"),
    group: list[str] = typer.Option([], "--group", "-g", help="Group (repeatable)"),
    request_class: str = typer.Option("interactive", "--class", help="interactive | batch"),
    url: str | None = typer.Option(
        None,
        "--url",
        help="Gateway base URL (default: the one `ragstream up` runs; else one starts in this process)",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object as the last line"),
) -> None:
    """Ask through the gateway; tokens stream to the terminal, then the citations."""
    from gateway.client import GatewayError

    s = settings()
    url = url or f"http://127.0.0.1:{s.stack.gateway_port}"
    target: str | None = url
    if not _gateway_up(url):
        err.print(f"[yellow]no gateway at {url}; starting one in this process[/]")
        target = None
    out = sys.stderr if json_out else sys.stdout

    def show(text: str) -> None:
        out.write(text)
        out.flush()

    try:
        result = asyncio.run(
            ask_via_gateway(
                s,
                question,
                tenant=tenant,
                user=user,
                groups=group,
                url=target,
                request_class=request_class,
                on_delta=show,
            )
        )
    except GatewayError as exc:
        err.print(f"[red]gateway refused the query[/] ({exc.status}): {exc.detail}")
        raise typer.Exit(1) from exc
    out.write("\n")
    if json_out:
        emit_json(result)
    else:
        for c in result["citations"]:
            console.print(
                f"  [{c['citation_id']}] {c['title'] or c['document_id']} (chunk {c['chunk_id'][:8]})"
            )
    if result["error"]:
        e = result["error"]  # {code, message, correlation_id}: no internals reach a client
        err.print(
            f"[red]query failed[/] {e.get('code')}: {e.get('message')} "
            f"(correlation id {e.get('correlation_id')})"
        )
        if e.get("code") == "deadline_exceeded" and request_class == "interactive":
            err.print("a slow model may need more time: try --class batch")
        raise typer.Exit(1)
