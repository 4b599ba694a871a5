"""`ragstream stack up | down | status [--json] | logs SERVICE`."""

from __future__ import annotations

import time
from dataclasses import asdict

import typer
from rich.table import Table

from application.cli.common import console, emit_json, err, settings
from application.stack.manager import Stack
from application.stack.process import tail
from application.stack.secrets import localize
from application.stack.services import StackError

app = typer.Typer(
    help="Run the local stack: Apache Kafka (KRaft) and Weaviate, on loopback.", no_args_is_help=True
)


def _stack(create_secrets: bool = False) -> Stack:
    from application.stack.extra import extra_services

    s = localize(settings(), create=True) if create_secrets else settings()
    return Stack(s, extra_services(s))


@app.command()
def up(json_out: bool = typer.Option(False, "--json", help="Print the status as one JSON object.")) -> None:
    """Build what is missing (cached), start every service, wait until healthy. Idempotent."""
    stack = _stack(create_secrets=True)  # first `up` generates the stack's own secrets
    t0 = time.monotonic()
    with err.status("starting the stack") as spinner:

        def progress(service: str, line: str) -> None:
            spinner.update(f"[bold]{service}[/]: {line}")
            if line.startswith(("started", "healthy", "already")):
                err.print(f"  {service}: {line}")

        try:
            statuses = stack.up(progress)
        except StackError as exc:
            err.print(f"[red]stack up failed:[/] {exc}")
            raise typer.Exit(1) from exc
    elapsed = time.monotonic() - t0
    if json_out:
        emit_json({"up_s": round(elapsed, 2), "services": [asdict(s) for s in statuses]})
    else:
        _print(statuses)
        console.print(f"stack up in {elapsed:.1f}s")


@app.command()
def down() -> None:
    """Stop the processes this stack started (by recorded pid); data stays."""
    stopped = _stack().down()
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status(json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Each service: pid, port, healthy, version. Exits 1 when any service is not running and healthy."""
    statuses = _stack().status()
    ok = all(s.state == "running" for s in statuses)
    if json_out:
        emit_json({"ok": ok, "services": [asdict(s) for s in statuses]})
    else:
        _print(statuses)
    if not ok:
        raise typer.Exit(1)


@app.command()
def logs(service: str, lines: int = typer.Option(50, "--lines", "-n")) -> None:
    """The last lines of a service's log."""
    try:
        path = _stack().log_path(service)
    except StackError as exc:
        err.print(str(exc))
        raise typer.Exit(2) from exc
    for line in tail(path, lines):
        console.print(line, markup=False, highlight=False)


def _print(statuses: list) -> None:  # type: ignore[type-arg]
    table = Table("service", "state", "pid", "port", "healthy", "version")
    for s in statuses:
        color = "green" if s.state == "running" else "red"
        table.add_row(
            s.service,
            f"[{color}]{s.state}[/]",
            str(s.pid or "-"),
            str(s.port),
            "yes" if s.healthy else "no",
            s.version,
        )
    console.print(table)
    for s in statuses:
        if s.last_log_lines:
            console.print(f"[red]{s.service}[/] last log lines:")
            for line in s.last_log_lines:
                console.print("  " + line, markup=False, highlight=False)
