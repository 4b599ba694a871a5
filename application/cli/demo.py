"""`ragstream demo`, the main job: ingest a sample corpus for a demo tenant, answer a question with citations.

Runs against the platform `ragstream up` starts (it starts it when it is not up: idempotent): every
consumer in its own process and the gateway on loopback. Publishes `samples/demo-corpus`, waits until it is
searchable, then asks through the running gateway like any client, answered by the local model. `--stub`
answers with the extractive stub instead, running the consumers in this process (no model server needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import typer
from rich.panel import Panel

from application.cli.common import console, emit_json, err, settings
from application.stack.secrets import localize
from ragstream.settings import Settings

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "demo-corpus"
QUESTION = "How does Weaviate keep one tenant's data away from another tenant?"


async def _run(question: str, tenant: str, corpus: Path, stub: bool) -> dict[str, object]:
    from application.stack.manager import stack_home
    from producers.folder_publish import publish_folder
    from schemas.ingestion import Acl

    s = settings()
    t0 = time.monotonic()
    async with _consumers(s, stub) as gateway_url:
        with err.status(f"publishing {corpus} for tenant {tenant!r} and waiting until searchable"):
            pub = await publish_folder(
                s,
                corpus,
                tenant,
                Acl(groups=("everyone",)),
                wait=True,
                timeout_s=300,
                state_dir=stack_home(s).parent,
            )
        err.print(f"ingested: {pub}")
        with err.status("asking"):
            answer = await _ask(s, tenant, question, gateway_url)
    answer["total_s"] = round(time.monotonic() - t0, 2)
    return {"ingest": pub, **answer}


@contextlib.asynccontextmanager
async def _consumers(s: Settings, stub: bool) -> AsyncIterator[str | None]:
    """The running platform (gateway URL), or with `--stub` the six consumers in this process (None: an
    in-process gateway)."""
    if not stub:
        from application import platform

        with err.status("starting the platform (ragstream up)") as spinner:
            await asyncio.to_thread(
                platform.up, localize(s, create=True), lambda n, line: spinner.update(f"[bold]{n}[/]: {line}")
            )
        yield f"http://127.0.0.1:{s.stack.gateway_port}"
        return
    from application.pipeline import LocalPipeline
    from ragstream.adapters.llm import ExtractiveStub
    from ragstream.runtime.deps import Deps

    with err.status("starting the six consumers in this process (extractive stub)"):
        pipeline = await LocalPipeline(s, deps=Deps(s, llm=ExtractiveStub())).start()
    try:
        yield None
    finally:
        await pipeline.stop()


async def _ask(s: Settings, tenant: str, question: str, url: str | None) -> dict[str, object]:
    """Through the gateway (the running one, or one in this process), like any client."""
    from application.cli.gateway import ask_via_gateway

    return await ask_via_gateway(s, question, tenant=tenant, user="demo-user", groups=("everyone",), url=url)


def demo(
    question: str = typer.Option(QUESTION, "--question", "-q"),
    tenant: str = typer.Option("demo", "--tenant"),
    corpus: Path = typer.Option(SAMPLES, "--corpus", exists=True, file_okay=False),
    stub: bool = typer.Option(False, "--stub", help="Use the extractive stub instead of the model server"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Ingest the sample corpus and answer a question with citations (needs `ragstream stack up`)."""
    result = asyncio.run(_run(question, tenant, corpus, stub))
    failure = result.get("error")
    if json_out:
        emit_json(result)
        if failure:
            raise typer.Exit(1)
        return
    if failure:  # a failed query is never shown as an (empty) answer
        e = failure if isinstance(failure, dict) else {"message": str(failure)}
        err.print(
            f"[red]query failed[/] {e.get('code', 'query_failed')}: {e.get('message', '')} "
            f"(correlation id {e.get('correlation_id', '')})"
        )
        raise typer.Exit(1)
    console.print(Panel(str(result["answer"]), title=f"[bold]Q:[/] {question}", expand=False))
    for c in result["citations"]:  # type: ignore[union-attr]
        console.print(
            f"  [{c['citation_id']}] {c['title'] or c['document_id']} — {c['document_id']} "
            f"(version {c['source_version']}, chunk {c['chunk_id'][:8]})"
        )
    console.print(f"done in {result['total_s']}s")
