"""`ragstream worker NAME`: run one consumer (one consumer group) until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

import typer

from ragstream.cli.common import settings
from schemas.topics import CONSUMERS


def worker(
    name: str = typer.Argument(..., help=f"one of: {', '.join(CONSUMERS)}"),
    metrics_port: int = typer.Option(9400, help="Prometheus /metrics port (0: off)"),
) -> None:
    """Run one consumer."""
    if name not in CONSUMERS:
        raise typer.BadParameter(f"unknown consumer {name!r}; known: {', '.join(CONSUMERS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from ragstream.runtime.app import run_worker

    asyncio.run(run_worker(name, settings(), metrics_port=metrics_port or None))
