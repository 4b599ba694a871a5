"""`ragstream up | down | status [--json] | logs NAME`: the whole local platform (application.platform)."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from application import platform
from application.cli.common import console, emit_json, err, settings
from application.stack.process import tail
from application.stack.secrets import localize
from application.stack.services import StackError


def up(
    json_out: bool = typer.Option(False, "--json", help="Print the status as one JSON object."),
    timeout_s: float = typer.Option(600.0, "--timeout", help="Seconds to wait until every process is ready"),
) -> None:
    """Start Kafka, Weaviate, the model server, every consumer as a process and the gateway (idempotent)."""
    s = localize(settings(), create=True)  # the first start generates the stack's own secrets
    t0 = time.monotonic()
    with err.status("starting the platform") as spinner:

        def progress(name: str, line: str) -> None:
            spinner.update(f"[bold]{name}[/]: {line}")
            if line.startswith(("started", "healthy", "already", "ready", "supervisor")):
                err.print(f"  {name}: {line}")

        try:
            out = platform.up(s, progress, timeout_s=timeout_s)
        except (StackError, TimeoutError) as exc:
            err.print(f"[red]up failed:[/] {exc}")
            raise typer.Exit(1) from exc
    out["up_s"] = round(time.monotonic() - t0, 2)
    if json_out:
        emit_json(out)
    else:
        _print(out)
        console.print(
            f"platform up in {out['up_s']:.1f}s; gateway at http://127.0.0.1:{s.stack.gateway_port}"
        )


def down() -> None:
    """Stop what `up` started (supervisor, consumers, gateway, then the stack); data stays."""
    stopped = platform.down(settings())
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


def status(json_out: bool = typer.Option(False, "--json", help="One JSON object as the last line.")) -> None:
    """Every process: pid, health, restarts and, for consumers, their group's lag. Exit 1 unless healthy."""
    out = platform.status(settings())
    if json_out:
        emit_json(out)
    else:
        _print(out)
    if not out["healthy"]:
        raise typer.Exit(1)


def logs(
    name: str = typer.Argument(..., help="kafka, weaviate, model-server, supervisor, gateway or a consumer"),
    lines: int = typer.Option(50, "--lines", "-n"),
) -> None:
    """The last lines of one process's log."""
    try:
        path = platform.log_path(settings(), name)
    except KeyError:
        err.print(f"[red]unknown process {name!r}[/]")
        raise typer.Exit(2) from None
    for line in tail(path, lines):
        console.print(line, highlight=False, markup=False)


def _print(out: dict) -> None:
    table = Table("process", "state", "pid", "port", "healthy", "restarts", "lag")
    for s in out["infrastructure"]:
        restarts = str(s.get("restarts", 0))
        table.add_row(
            s["service"], s["state"], str(s["pid"] or "-"), str(s["port"]), _yes(s["healthy"]), restarts, "-"
        )
    for p in out["processes"]:
        lag = p.get("lag")
        table.add_row(
            p["name"],
            p["state"],
            str(p["pid"] or "-"),
            str(p["port"]),
            _yes(p["healthy"]),
            str(p["restarts"]),
            "-" if lag is None else str(lag),
        )
    console.print(table)


def _yes(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]no[/]"
