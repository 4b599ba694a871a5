"""`ragstream demo`, the main job: ingest a sample corpus for a demo tenant, answer a question with citations.

Expects the local stack to be up (`ragstream stack up`). Runs the six consumers in this process (each with
its own consumer group, as separate Deployments would), publishes `samples/demo-corpus`, waits until it is
searchable, then asks through the gateway like any client.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import httpx
import typer
from rich.panel import Panel

from application.cli.common import console, emit_json, err, settings

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "demo-corpus"
QUESTION = "How does Weaviate keep one tenant's data away from another tenant?"


def _llm_available(base_url: str) -> bool:
    try:
        return httpx.get(base_url.rstrip("/") + "/models", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


async def _run(question: str, tenant: str, corpus: Path, stub: bool) -> dict[str, object]:
    from application.pipeline import LocalPipeline
    from application.stack.manager import stack_home
    from producers.folder_publish import publish_folder
    from ragstream.adapters.llm import ExtractiveStub
    from ragstream.runtime.deps import Deps
    from schemas.ingestion import Acl

    s = settings()
    deps = Deps(s)
    if stub or not _llm_available(s.llm.base_url):
        if not stub:
            err.print(f"[yellow]no model server at {s.llm.base_url}; answering with the extractive stub[/]")
        deps = replace(deps, llm=ExtractiveStub())
    t0 = time.monotonic()
    with err.status("starting the six consumers (loading the embedding model)"):
        pipeline = await LocalPipeline(s, deps=deps).start()
    try:
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
            answer = await _ask(s, tenant, question)
    finally:
        await pipeline.stop()
    answer["total_s"] = round(time.monotonic() - t0, 2)
    return {"ingest": pub, **answer}


async def _ask(s, tenant: str, question: str) -> dict[str, object]:
    """Through the gateway when it is available, else as a query event (the same path the gateway takes)."""
    try:
        from application.cli.gateway import ask_via_gateway
    except ImportError:
        ask_via_gateway = None
    if ask_via_gateway is not None:
        return await ask_via_gateway(s, question, tenant=tenant, user="demo-user", groups=("everyone",))
    from ragstream.runtime.queries import QueryClient

    async with QueryClient(s) as client:
        r = await client.ask(tenant, "demo-user", ("everyone",), question, timeout_s=300)
    final = r["final"]
    failed = final.type != "QueryAnswered"
    return {
        "query_id": final.query_id,
        "error": {"code": getattr(final, "code", "query_failed"), "message": "the query failed"}
        if failed
        else None,
        "answer": getattr(final, "answer", ""),
        "abstained": getattr(final, "abstained", False),
        "citations": [c.model_dump() for c in getattr(final, "citations", ())],
        "timings_ms": getattr(final, "timings_ms", {}),
    }


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
