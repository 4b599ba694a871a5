"""The `ragstream` console script: one typer app, one sub-app per area."""

from __future__ import annotations

import typer

from ragstream.cli import demo, dlq, lineage, publish, stack, worker
from ragstream.cli import gateway as gateway_module

app = typer.Typer(
    name="ragstream",
    help="ragstream: event-driven, multi-tenant RAG on Kafka and Weaviate.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(stack.app, name="stack")
app.command()(worker.worker)
app.command()(publish.publish)
app.add_typer(dlq.app, name="dlq")
app.command()(lineage.lineage)
app.command()(demo.demo)
app.add_typer(gateway_module.app, name="gateway")
app.command()(gateway_module.token)
app.command()(gateway_module.ask)


def _optional(module: str, name: str) -> None:
    """Register a sub-app whose module exists (areas land one by one)."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return
    app.add_typer(mod.app, name=name)


_optional("ragstream.cli.eval", "eval")
_optional("ragstream.cli.generation", "generation")
_optional("ragstream.cli.backup", "backup")

if __name__ == "__main__":
    app()
