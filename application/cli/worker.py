"""`ragstream worker NAME`: run one consumer (one consumer group) until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

import typer

from application.cli.common import settings
from schemas.topics import CONSUMERS


def worker(
    name: str = typer.Argument(..., help=f"one of: {', '.join(CONSUMERS)}"),
    metrics_port: int = typer.Option(9400, help="Prometheus /metrics port (0: off)"),
    metrics_host: str | None = typer.Option(
        None,
        help="Address /metrics binds (default: telemetry.metrics_host, 127.0.0.1 unless configured)",
    ),
) -> None:
    """Run one consumer."""
    if name not in CONSUMERS:
        raise typer.BadParameter(f"unknown consumer {name!r}; known: {', '.join(CONSUMERS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from application.compose import run_worker

    cfg = settings()
    asyncio.run(
        run_worker(
            name,
            cfg,
            metrics_port=metrics_port or None,
            metrics_host=metrics_host or cfg.telemetry.metrics_host,
        )
    )
