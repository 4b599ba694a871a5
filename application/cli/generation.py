"""`ragstream generation list | plan | build | promote | rollback | retire | canary | signals`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from typing import Any, NoReturn

import typer
from rich.table import Table

from application.cli.common import console, emit_json, err, settings
from ragstream import names

app = typer.Typer(
    help="Index generations: build beside the live index, eval-gated promotion, rollback, canary.",
    no_args_is_help=True,
)

EMBEDDING_MODEL = typer.Option(None, "--embedding-model", help="Embedding model id (default: configured)")
EMBEDDING_PATH = typer.Option(None, "--embedding-path", help="Local directory of that model")
MAX_TOKENS = typer.Option(None, "--chunk-max-tokens", help="Chunking policy: max tokens per chunk")
OVERLAP = typer.Option(None, "--chunk-overlap-tokens", help="Chunking policy: overlap tokens")
MAX_CHUNKS = typer.Option(None, "--max-chunks-per-document", help="Chunking policy: cap per document")
JSON_OUT = typer.Option(False, "--json", help="One JSON object as the last line")


def _client() -> Any:
    from ragstream.adapters.weaviate_client import connect

    return connect(settings().weaviate)


def _fail(message: str) -> NoReturn:
    err.print(f"[red]{message}[/]")
    raise typer.Exit(1)


@app.command("list")
def list_(json_out: bool = JSON_OUT) -> None:
    """Every generation: status, collection, policy, model, source offsets, eval results."""
    from ragstream.generations.registry import Registry

    client = _client()
    try:
        reg = Registry(client, settings())
        view = reg.view()
        rows = [view.summary(n) for n in view.generations]
    finally:
        client.close()
    out = {
        "live": view.live,
        "alias": reg.alias,
        "canary": list(view.canary) if view.canary else None,
        "tenants": {t: s[-1] for t, s in view.tenant_history.items() if s},
        "generations": rows,
    }
    if json_out:
        emit_json(out)
        return
    if not rows:
        console.print(f"no registry yet: serving reads {names.chunks_collection(settings().index)} (static)")
        return
    table = Table("name", "status", "collection", "policy", "model", "created", "evals")
    for r in rows:
        last = r["evals"][-1] if r["evals"] else None
        table.add_row(
            r["name"],
            r["status"],
            r["collection"],
            r["policy_hash"],
            r["embedding_model"],
            r["created_at"][:19],
            "-" if last is None else ("pass" if last.get("passed") else last.get("kind", "fail")),
        )
    console.print(table)
    console.print(f"live: {view.live}  canary: {out['canary']}  tenant pins: {out['tenants']}")


@app.command()
def plan(
    embedding_model: str | None = EMBEDDING_MODEL,
    embedding_path: str | None = EMBEDDING_PATH,
    chunk_max_tokens: int | None = MAX_TOKENS,
    chunk_overlap_tokens: int | None = OVERLAP,
    max_chunks_per_document: int | None = MAX_CHUNKS,
    json_out: bool = JSON_OUT,
) -> None:
    """Dry run of a rebuild: documents, chunks, tokens, time, cost and storage per tenant (writes nothing)."""
    from ragstream.adapters.tokenizer import HFTokenizer
    from ragstream.generations.plan import plan_rebuild

    s = settings()
    policy, embedder = _candidate(
        s, embedding_model, embedding_path, chunk_max_tokens, chunk_overlap_tokens, max_chunks_per_document
    )
    result = asyncio.run(plan_rebuild(s, policy, HFTokenizer(), embedder)).to_json()
    if json_out:
        emit_json(result)
        return
    table = Table("tenant", "documents", "chunks", "tokens to embed", "seconds", "cost", "storage MB")
    for name, t in result["tenants"].items():
        table.add_row(
            name,
            str(t["documents"]),
            str(t["chunks"]),
            str(t["tokens_to_embed"]),
            f"{t['estimated_seconds']:.1f}",
            f"{t['estimated_cost']:.4f}",
            f"{t['estimated_storage_bytes'] / 1e6:.1f}",
        )
    console.print(table)
    console.print(
        f"model {result['embedding_model']} at {result['throughput_tokens_per_s']:.0f} tokens/s: "
        f"{result['tokens_to_embed']} tokens, ~{result['estimated_seconds']:.0f}s, "
        f"cost {result['estimated_cost']:.4f}, storage {result['estimated_storage_bytes'] / 1e6:.1f} MB"
    )


def _candidate(
    s: Any,
    embedding_model: str | None,
    embedding_path: str | None,
    max_tokens: int | None,
    overlap_tokens: int | None,
    max_chunks_per_document: int | None,
) -> tuple[Any, Any]:
    """The candidate's chunking policy and embedder from the CLI options (exit 1 on a bad model)."""
    from ragstream.generations.models import embedder_for, policy_from

    policy = policy_from(
        s,
        max_tokens=max_tokens,
        overlap_tokens=overlap_tokens,
        max_chunks_per_document=max_chunks_per_document,
    )
    try:
        return policy, embedder_for(s, embedding_model, path=embedding_path)
    except ValueError as exc:
        _fail(str(exc))


@app.command()
def build(
    name: str | None = typer.Option(None, help="Generation name (default: content-addressed g<id>)"),
    embedding_model: str | None = EMBEDDING_MODEL,
    embedding_path: str | None = EMBEDDING_PATH,
    chunk_max_tokens: int | None = MAX_TOKENS,
    chunk_overlap_tokens: int | None = OVERLAP,
    max_chunks_per_document: int | None = MAX_CHUNKS,
    timeout: float | None = typer.Option(None, help="Give up waiting for lag zero after this many seconds"),
    follow: bool = typer.Option(False, help="Keep the candidate current after it is ready (until Ctrl-C)"),
    json_out: bool = JSON_OUT,
) -> None:
    """Replay the compacted source topic into a new generation beside the live one; ready at lag zero."""
    from ragstream.adapters.tokenizer import HFTokenizer
    from ragstream.generations.build import start_build
    from ragstream.generations.models import embedder_for
    from ragstream.generations.registry import Registry

    s = settings()
    policy, embedder = _candidate(
        s, embedding_model, embedding_path, chunk_max_tokens, chunk_overlap_tokens, max_chunks_per_document
    )
    live_embedder = embedder if embedding_model is None else None

    async def run() -> dict[str, Any]:
        client = _client()
        try:
            reg = Registry(client, s)
            live = live_embedder or embedder_for(s)
            b = await start_build(
                s,
                reg,
                policy=policy,
                embedder=embedder,
                tokenizer=HFTokenizer(),
                live_embedder=live,
                name=name,
            )
            err.print(f"building {b.record.name} into {b.record.chunks_collection} (group {b.group})")
            try:
                result = await b.wait_ready(timeout, progress=lambda p: err.print(json.dumps(p)))
                if follow and result.ready:
                    err.print(f"{b.record.name} ready; following the source topic (Ctrl-C to stop)")
                    stop = asyncio.Event()
                    loop = asyncio.get_running_loop()
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        with contextlib.suppress(NotImplementedError):
                            loop.add_signal_handler(sig, stop.set)
                    await stop.wait()
                return result.to_json()
            finally:
                await b.stop()
        finally:
            client.close()

    out = asyncio.run(run())
    if json_out:
        emit_json(out)
    else:
        console.print(out)
    if not out["ready"]:
        raise typer.Exit(2)


def _lifecycle(client: Any, sets: list[str] | None = None) -> Any:
    from evals.gate import runner_evaluator
    from ragstream.generations.gate import Gate, RecallEvaluator
    from ragstream.generations.lifecycle import Lifecycle
    from ragstream.generations.models import record_embedder
    from ragstream.generations.registry import Registry

    s = settings()
    reg = Registry(client, s)

    class _Recall:
        async def __call__(self, st: Any, path: str, generation: str) -> Any:
            emb = record_embedder(st, reg.record(generation))
            return await RecallEvaluator(client, emb)(st, path, generation)

    gate = Gate(tuple(sets) if sets else s.generations.eval_sets, recall=_Recall(), runner=runner_evaluator)
    return Lifecycle(s, reg, gate)


def _run_lifecycle(op: str, *args: Any, sets: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    from ragstream.generations.gate import GateUnavailableError
    from ragstream.generations.lifecycle import LifecycleError, PromotionRefusedError

    client = _client()
    try:
        lc = _lifecycle(client, sets)
        try:
            return asyncio.run(getattr(lc, op)(*args, **kw))
        except PromotionRefusedError as exc:
            emit_json({"refused": True, "reason": str(exc), "evals": [o.model_dump() for o in exc.outcomes]})
            raise typer.Exit(3) from exc
        except (LifecycleError, GateUnavailableError, ValueError) as exc:
            _fail(str(exc))
            raise
    finally:
        client.close()


@app.command()
def promote(
    name: str,
    tenant: str | None = typer.Option(None, help="Promote for this tenant only"),
    eval_set: list[str] = typer.Option(None, "--set", help="Evaluation set (default: generations.eval_sets)"),
    force: bool = typer.Option(False, help="Promote even if the gate refuses (recorded as forced)"),
) -> None:
    """Run the evaluation gate on NAME, then switch readers to it atomically (or one tenant)."""
    emit_json(_run_lifecycle("promote", name, tenant=tenant, force=force, sets=eval_set))


@app.command()
def rollback(tenant: str | None = typer.Option(None, help="Roll back this tenant only")) -> None:
    """Return readers to the previous generation in one step."""
    emit_json(_run_lifecycle("rollback", tenant=tenant))


@app.command()
def retire(name: str, force: bool = typer.Option(False, help="Even the rollback target")) -> None:
    """Delete a generation's collections (never one that serves queries); its record stays."""
    emit_json(_run_lifecycle("retire", name, force=force))


@app.command()
def evaluate(
    name: str, eval_set: list[str] = typer.Option(None, "--set", help="Evaluation set (default: configured)")
) -> None:
    """Run the gate's evaluation sets on NAME and record the results, without promoting."""
    outcomes = _run_lifecycle("evaluate", name, sets=eval_set)
    emit_json({"generation": name, "evals": [o.model_dump() for o in outcomes]})  # type: ignore[union-attr]


@app.command()
def canary(
    name: str | None = typer.Argument(None, help="Candidate generation (omit with --off)"),
    share: float | None = typer.Option(None, help="Share of users (stable per user), 0..1"),
    off: bool = typer.Option(False, "--off", help="Stop the canary"),
) -> None:
    """Serve a share of users from a candidate generation; compare with `generation signals`."""
    if off:
        emit_json(_run_lifecycle("canary_off"))
        return
    if name is None:
        _fail("give a generation name, or --off")
    emit_json(_run_lifecycle("canary", name, share))


@app.command()
def signals(
    minutes: float = typer.Option(60.0, help="Look back this many minutes"), json_out: bool = JSON_OUT
) -> None:
    """Quality and latency per generation, from the query topics (compare a canary with live)."""
    from ragstream.generations.signals import report

    out = asyncio.run(report(settings(), since_s=minutes * 60))
    if json_out:
        emit_json(out)
        return
    table = Table("generation", "queries", "empty", "p50 ms", "p95 ms", "answers", "abstained", "grounded")
    for gen, r in out["generations"].items():
        table.add_row(
            gen,
            str(r["queries"]),
            f"{r['empty_rate']:.2%}",
            f"{r['retrieval_ms_p50']:.0f}",
            f"{r['retrieval_ms_p95']:.0f}",
            str(r["answers"]),
            f"{r['abstain_rate']:.2%}",
            "-" if r["groundedness_mean"] is None else f"{r['groundedness_mean']:.2f}",
        )
    console.print(table)
