"""`ragstream worker NAME`: run one consumer (one consumer group) until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

import typer

from application.cli.common import settings
from schemas.topics import CONSUMERS


def worker(
    name: str = typer.Argument(..., help=f"one of: {', '.join(CONSUMERS)}"),
    metrics_port: int | None = typer.Option(
        None, help="Prometheus /metrics port (default: telemetry.metrics_port, 9400 unless set; 0: off)"
    ),
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
    port = cfg.telemetry.metrics_port if metrics_port is None else metrics_port
    asyncio.run(
        run_worker(
            name,
            cfg,
            metrics_port=port or None,
            metrics_host=metrics_host or cfg.telemetry.metrics_host,
        )
    )
