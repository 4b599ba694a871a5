"""The `ragstream` console script: one typer app, one sub-app per area."""

from __future__ import annotations

import typer

from application.cli import backup, contracts, demo, dlq, generation, lineage, publish, stack, worker
from application.cli import eval as eval_module
from application.cli import gateway as gateway_module
from application.cli import mcp as mcp_module
from application.cli import platform as platform_cli

app = typer.Typer(
    name="ragstream",
    help="ragstream: event-driven, multi-tenant RAG on Kafka and Weaviate.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command()(platform_cli.up)
app.command()(platform_cli.down)
app.command()(platform_cli.status)
app.command()(platform_cli.logs)
app.add_typer(stack.app, name="stack")
app.command()(worker.worker)
app.command()(publish.publish)
app.add_typer(dlq.app, name="dlq")
app.command()(lineage.lineage)
app.command()(demo.demo)
app.add_typer(gateway_module.app, name="gateway")
app.command()(gateway_module.token)
app.command()(gateway_module.ask)
app.add_typer(eval_module.app, name="eval")
app.add_typer(generation.app, name="generation")
app.add_typer(backup.app, name="backup")
app.command()(contracts.contracts)
app.command()(mcp_module.mcp)


if __name__ == "__main__":
    app()
