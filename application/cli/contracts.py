"""`ragstream contracts [--check]`: write (or check) the checked-in contracts under schemas/generated/.

The JSON Schema of every topic's events (schemas.export) and the AsyncAPI document generated from the
consumer modules' declarations (application.asyncapi). `--check` exits 1 when either is stale; the unit
tests run the same comparison, so a contract change without a re-export fails CI.
"""

from __future__ import annotations

import typer

from application.cli.common import console, err
from schemas import export


def contracts(
    check: bool = typer.Option(False, "--check", help="Only compare; exit 1 when a file is stale"),
) -> None:
    """Write the JSON Schemas and the AsyncAPI document from the code."""
    # Imported here: it loads every consumer module, which no other command needs at start-up.
    from application import asyncapi

    if check:
        stale = export.main(["--check"]) != 0
        if not asyncapi.is_current():
            err.print(f"stale: {asyncapi.PATH}")
            stale = True
        if stale:
            err.print("run `ragstream contracts` to rewrite them")
            raise typer.Exit(1)
        console.print("contracts are current")
        return
    export.main([])
    console.print(f"wrote {asyncapi.write()}")
