"""`ragstream mcp`: the MCP server over stdio (tools `search` and `ask`) for desktop and agent clients.

Every tool call is forwarded to a running gateway's `POST /v1/answer` with the caller's credential: a token
(JWT) or an API key from `--token` or `RAGSTREAM_TOKEN`; tenant, user and groups come from it at the
gateway, as for any client. Nothing but MCP messages goes to stdout.
"""

from __future__ import annotations

import typer

from application.cli.common import err, settings

TOKEN_ENV = "RAGSTREAM_TOKEN"


def mcp(
    url: str | None = typer.Option(
        None, "--url", help="Gateway base URL (default: the one `ragstream up` runs)"
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar=TOKEN_ENV,
        show_envvar=True,
        help=f"The caller's JWT or API key (prefer the {TOKEN_ENV} variable: flags show in process lists)",
    ),
) -> None:
    """Serve the MCP tools `search` and `ask` over stdio, each call with the given credential."""
    from gateway.mcp_server import build_server, remote_asker

    if not token:
        err.print(f"[red]a credential is required: set {TOKEN_ENV} or pass --token[/]")
        raise typer.Exit(2)
    base = url or f"http://127.0.0.1:{settings().stack.gateway_port}"
    build_server(remote_asker(base.rstrip("/"), token)).run("stdio")
