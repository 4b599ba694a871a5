"""`ragstream eval ...`: offline evaluation runs; `halueval` lives here, other eval commands join `app`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from application.cli.common import console, emit_json, err
from evals.asking import Launcher
from ragstream.core.groundedness import GroundednessScorer
from ragstream.runtime.deps import Deps
from ragstream.settings import Settings

app = typer.Typer(
    help="Evaluation: groundedness (HaluEval), retrieval quality and leak checks.", no_args_is_help=True
)


def _launcher() -> Launcher:
    # Imported when a command runs: the consumers' modules pull in the Weaviate client (seconds).
    from application.pipeline import LocalPipeline

    return LocalPipeline


def _deps(s: Settings, stub: bool) -> Deps:
    """The adapters of a local pipeline: the extractive stub instead of the model server when asked."""
    if not stub:
        return Deps(s)
    from ragstream.adapters.llm import ExtractiveStub

    return Deps(s, llm=ExtractiveStub())


def _scorer(embed: bool, threshold: float | None) -> GroundednessScorer:
    kwargs = {} if threshold is None else {"threshold": threshold}
    if not embed:
        return GroundednessScorer(**kwargs)
    from ragstream.adapters.embedder import SentenceTransformerEmbedder
    from ragstream.settings import EmbeddingSettings

    return GroundednessScorer(embedder=SentenceTransformerEmbedder(EmbeddingSettings()), **kwargs)


@app.command()
def halueval(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="HaluEval QA rows (JSONL or JSON array)"
    ),
    limit: int | None = typer.Option(None, min=1, help="Only the first N rows"),
    embed: bool = typer.Option(False, "--embed", help="Let the packaged MiniLM vouch for paraphrased words"),
    threshold: float | None = typer.Option(None, min=0.0, max=1.0, help="Statement support threshold"),
    json_out: bool = typer.Option(False, "--json", help="Last stdout line: one JSON object"),
    verifier: str = typer.Option("lexical", "--verifier", help="lexical | model | combined"),
) -> None:
    """Groundedness accuracy on HaluEval QA: every right and hallucinated answer judged alone."""
    from application.cli.common import settings
    from evals.halueval import VERIFIERS, HaluEvalFormatError, run_halueval

    if verifier not in VERIFIERS:
        err.print(f"[red]--verifier must be one of {', '.join(VERIFIERS)}[/red]")
        raise typer.Exit(2)
    model = None
    if verifier != "lexical":
        from ragstream.adapters.verifier import ModelVerifier

        model = ModelVerifier(settings().llm)
    scorer = _scorer(embed, threshold)
    columns = (TextColumn("halueval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("rows", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = run_halueval(
                file, scorer=scorer, limit=limit, progress=tick, verifier=verifier, model=model
            )
        except HaluEvalFormatError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    if json_out:
        emit_json(result)
        return
    table = Table("metric", "value", title=f"HaluEval QA groundedness: {file.name}")
    for key in ("rows", "answers", "accuracy", "right_accuracy", "hallucinated_accuracy"):
        table.add_row(key, _fmt(result[key]))
    for key in ("calibration_accuracy", "heldout_accuracy", "threshold", "embedder", "answers_per_s"):
        table.add_row(key, _fmt(result[key]))
    console.print(table)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1.0 else f"{value:.1f}"
    return str(value)


@app.command("run")
def run_cmd(
    set_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Question set (YAML or JSONL)"),
    generation: str | None = typer.Option(None, "--generation", "-g", help="Index generation to evaluate"),
    thresholds: Path | None = typer.Option(
        None, "--thresholds", exists=True, dir_okay=False, help="Thresholds file (overrides the set's)"
    ),
    pipeline: str = typer.Option(
        "auto", "--pipeline", help="auto | local | external: where the consumers run (auto: local if none)"
    ),
    stub: bool = typer.Option(False, "--stub", help="Answer with the extractive stub (no model server)"),
    no_ingest: bool = typer.Option(False, "--no-ingest", help="Do not publish the set's documents first"),
    concurrency: int = typer.Option(1, min=1, max=64, help="Questions in flight at once"),
    timeout_s: float = typer.Option(180.0, "--timeout", min=1.0, help="Seconds to wait for one answer"),
    out: Path | None = typer.Option(None, "--out", help="Report folder (default: state dir/evals/SET/RUN)"),
    json_out: bool = typer.Option(False, "--json", help="Last stdout line: one JSON object"),
) -> None:
    """Send a question set through the pipeline as query events, score it, write reports, gate on it.

    Exit 0 when every threshold holds, 1 when one is missed (or anything unauthorized was exposed),
    2 on a malformed set or thresholds file.
    """
    import asyncio

    from application.cli.common import settings
    from evals.questions import SetFormatError
    from evals.report import write_run
    from evals.runner import run_set

    if pipeline not in ("auto", "local", "external"):
        err.print(f"[red]--pipeline must be auto, local or external, not {pipeline!r}[/red]")
        raise typer.Exit(2)
    deps = _deps(settings(), stub)
    try:
        result = asyncio.run(
            run_set(
                settings(),
                set_file,
                generation=generation,
                progress=not json_out or err.is_terminal,
                thresholds=thresholds,
                pipeline=pipeline,  # type: ignore[arg-type]
                deps=deps,
                launch=_launcher(),
                ingest=not no_ingest,
                concurrency=concurrency,
                timeout_s=timeout_s,
            )
        )
    except SetFormatError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    payload = result.to_json()
    paths = write_run(payload, out_dir=out)
    payload["reports"] = {k: str(v) for k, v in paths.items()}
    _export(payload["set"], generation, result.metrics, payload.get("diff"))
    if json_out:
        summary = {k: v for k, v in payload.items() if k != "questions"}
        emit_json(summary)
    else:
        _print_run(payload)
    failed = [q for q in result.questions if q.get("error")]
    for q in failed:  # a failed query is reported as such, never scored as an empty answer
        err.print(f"[red]query failed[/] {q['id']}: {q['error']}")
    raise typer.Exit(0 if result.passed and not failed else 1)


def _export(
    set_name: str, generation: str | None, metrics: dict, diff: dict | None, leaks: int | None = None
) -> None:
    """Push the run's series to the Pushgateway when one is configured (a failed push never fails the run)."""
    from application.cli.common import settings
    from evals.export import baseline_of, push, results_registry

    url = settings().telemetry.pushgateway_url
    if not url:
        return
    reg = results_registry(set_name, generation, metrics, baseline=baseline_of(diff), leaks=leaks)
    try:
        push(url, set_name, reg)
    except OSError as exc:
        err.print(f"[yellow]could not push eval metrics to {url}: {exc}[/yellow]")


def _print_run(payload: dict) -> None:
    from evals.questions import Threshold
    from evals.report import HEADLINE

    verdict = "[green]PASSED[/green]" if payload["passed"] else "[red]FAILED[/red]"
    table = Table("metric", "value", "threshold", title=f"{payload['set']}: {verdict}")
    th = payload["thresholds"]
    metrics = payload["metrics"]
    names = [n for n in HEADLINE if n in metrics] + [n for n in th if n not in HEADLINE]
    for n in names:
        t = th.get(n)
        bound = Threshold.model_validate(t).describe() if t else ""
        table.add_row(n, _fmt(metrics.get(n, float("nan"))), bound)
    for k in ("latency_e2e_ms_p50", "latency_e2e_ms_p95", "latency_e2e_ms_p99"):
        if k in metrics:
            table.add_row(k, f"{metrics[k]:.0f}", "")
    console.print(table)
    for f in payload["failures"]:
        console.print(f"[red]✗ {f}[/red]")
    diff = payload.get("diff")
    if diff:
        console.print(
            f"vs previous run {diff['previous_run_id']}: "
            f"worse {diff['worse'] or '-'}; better {diff['better'] or '-'}"
        )
    for k, v in payload["reports"].items():
        console.print(f"{k}: {v}")


@app.command("beir")
def beir_cmd(
    directory: Path = typer.Argument(..., exists=True, file_okay=False, help="BEIR directory"),
    mode: str = typer.Option("all", "--mode", help="bm25 | dense | hybrid | rerank | all"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N judged queries"),
    json_out: bool = typer.Option(False, "--json", help="Last stdout line: one JSON object keyed by mode"),
    top_k: int = typer.Option(
        100, "--top-k", min=1, help="Passages each query asks for (the caller's top_k)"
    ),
    request_class: str = typer.Option("batch", "--request-class", help="interactive | batch"),
) -> None:
    """Ingest a BEIR corpus through the pipeline (reused when indexed) and score, per mode (a serving
    configuration), the ranking the retrieval and rerank consumers serve."""
    import asyncio

    from application.cli.common import settings
    from evals.beir import BeirFormatError
    from evals.beir_eval import MODES, evaluate_beir

    modes = list(MODES) if mode == "all" else [mode]
    if any(m not in MODES for m in modes):
        err.print(f"[red]--mode must be one of {', '.join(MODES)} or all, not {mode!r}[/red]")
        raise typer.Exit(2)
    columns = (
        TextColumn("beir {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        tasks: dict[str, object] = {}

        def tick(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)  # type: ignore[arg-type]

        try:
            report = asyncio.run(
                evaluate_beir(
                    settings(),
                    directory,
                    modes,
                    progress=tick,
                    limit_queries=limit,
                    launch=_launcher(),
                    request_class=request_class,
                    top_k=top_k,
                )
            )
        except BeirFormatError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    ing = report.ingest
    err.print(
        f"corpus {report.dataset}: tenant {report.tenant}, generation {report.generation}, "
        + (
            "reused the existing index"
            if ing["reused"]
            else f"ingested {ing['published']} documents in {ing['seconds']}s"
        )
    )
    table = Table(
        "mode", "nDCG@10", "recall@100", "MRR@10", "queries", "method", title=f"BEIR {report.dataset}"
    )
    for m, r in report.modes.items():
        table.add_row(
            m, f"{r.ndcg_at_10:.4f}", f"{r.recall_at_100:.4f}", f"{r.mrr_at_10:.4f}", str(r.queries), r.detail
        )
    (err if json_out else console).print(table)
    if report.published:
        pub = Table(*report.published[0].keys(), title="published figures (datasets README)")
        for row in report.published:
            pub.add_row(*row.values())
        (err if json_out else console).print(pub)
    if json_out:
        emit_json(report.to_json())


@app.command("beir-set")
def beir_set_cmd(
    directory: Path = typer.Argument(..., exists=True, file_okay=False, help="BEIR directory"),
    out: Path = typer.Argument(..., help="The question set to write (.jsonl)"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N judged queries"),
    top_k: int = typer.Option(50, "--top-k", min=1, max=50),
    request_class: str = typer.Option("batch", "--request-class", help="interactive | batch"),
) -> None:
    """Write a question set for `eval run` from a BEIR directory (graded expected_docs, corpus inline, in
    the tenant `eval beir` indexes it into)."""
    from application.cli.common import settings
    from evals.beir_set import write_beir_set

    n = write_beir_set(settings(), directory, out, limit=limit, top_k=top_k, request_class=request_class)
    console.print(f"wrote {n} questions to {out}")


@app.command("hardset")
def hardset_cmd(
    dev: Path = typer.Argument(..., exists=True, dir_okay=False, help="HaluEval QA dev rows (JSONL)"),
    out: Path = typer.Argument(..., help="The hard set to write (JSONL, HaluEval's fields)"),
    count: int = typer.Option(60, "--count", min=1),
    start: int = typer.Option(1000, "--start", min=0, help="First dev row used"),
) -> None:
    """Build the hard groundedness set: right answers restated by the configured model, wrong answers
    the restatement with a name or number swapped for another from the same passage."""
    from application.cli.common import settings
    from evals.hardset import build, write

    def tick(done: int, total: int) -> None:
        err.print(f"hardset {done}/{total}")

    n = write(build(dev, settings().llm, start=start, count=count, progress=tick), out)
    console.print(f"wrote {n} rows to {out}")


@app.command("leaks")
def leaks_cmd(
    stub: bool = typer.Option(False, "--stub", help="Answer with the extractive stub (no model server)"),
    pipeline: str = typer.Option("auto", "--pipeline", help="auto | local | external"),
    strict: bool = typer.Option(
        False, "--strict", help="Also fail when the in-search ACL filter lets a canary through"
    ),
    generation: str | None = typer.Option(None, "--generation", "-g"),
    timeout_s: float = typer.Option(120.0, "--timeout", min=1.0),
    via: str = typer.Option(
        "gateway",
        "--via",
        help="gateway (native HTTP) | openai | mcp | console (its pages) | all (every surface) | events",
    ),
    gateway_url: str | None = typer.Option(
        None, "--gateway-url", help="A running gateway (default: in-process)"
    ),
    json_out: bool = typer.Option(False, "--json", help="Last stdout line: one JSON object"),
) -> None:
    """Canary documents per tenant, group and user; probes as real callers; exit 1 on any leak."""
    import asyncio

    import httpx

    from application.cli.common import settings
    from evals.asking import with_generation
    from evals.leaks import run_leaks

    s = with_generation(settings(), generation)
    if not stub:
        try:
            stub = httpx.get(s.llm.base_url.rstrip("/") + "/models", timeout=2.0).status_code != 200
        except httpx.HTTPError:
            stub = True
        if stub:
            err.print(f"[yellow]no model server at {s.llm.base_url}; answering with the extractive stub[/]")
    deps = _deps(s, stub)
    if pipeline not in ("auto", "local", "external") or via not in (
        "gateway",
        "openai",
        "mcp",
        "console",
        "all",
        "events",
    ):
        err.print(
            "[red]--pipeline must be auto, local or external; "
            "--via gateway, openai, mcp, console, all or events[/red]"
        )
        raise typer.Exit(2)
    columns = (TextColumn("leaks {task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("probes", total=None)

        def tick(done: int, total: int, probe: str) -> None:
            bar.update(task, completed=done, total=total, description=probe[:40])

        report = asyncio.run(
            run_leaks(
                s,
                pipeline=pipeline,  # type: ignore[arg-type]
                deps=deps,
                launch=_launcher(),
                strict=strict,
                generation=generation,
                timeout_s=timeout_s,
                progress=tick,
                via=via,  # type: ignore[arg-type]
                gateway_url=gateway_url,
            )
        )
    summary = report.summary()
    _export("leak-suite", generation, {"probes": summary["probes"]}, None, leaks=summary["leaks"])
    table = Table(
        "kind",
        "probes",
        "leaking",
        title="leak suite: " + ("[green]PASSED[/]" if report.passed else "[red]FAILED[/]"),
    )
    for kind, row in summary["by_kind"].items():
        table.add_row(kind, str(row["probes"]), str(row["leaking"]))
    (err if json_out else console).print(table)
    out = err if json_out else console
    out.print(
        f"{summary['probes']} probes, {summary['leaks']} leaks, "
        f"{summary['filter_breaches']} filter breaches, "
        f"{summary['controls'] - summary['controls_failed']}/{summary['controls']} "
        "controls saw their canary, "
        f"{summary['errors']} errors, {summary['elapsed_s']}s"
    )
    for leak in report.leaks:
        out.print(
            f"[red]LEAK[/] {leak['probe']}: {leak['canary']} of {leak['document']} in {leak['surface']}"
        )
    for c in report.controls_failed:
        out.print(f"[red]control failed[/] {c}: an authorized caller did not see its canary")
    for e in report.errors:
        out.print(f"[red]error[/] {e}")
    if json_out:
        emit_json(summary)
    raise typer.Exit(0 if report.passed else 1)
