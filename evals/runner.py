"""The question-set runner: a set goes through the real pipeline as query events, then it is scored.

`run_set(settings, set_path, generation=...)` is the promotion gate's API: it returns a `RunResult` whose
`passed` is False when a configured threshold (set file, thresholds file) is missed or when any document
the caller may not read reached the prompt, the answer or a citation (that bound cannot be relaxed).
The CLI `ragstream eval run` wraps it and writes the JSON result and the Markdown/HTML reports.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evals.asking import (
    Asked,
    Launcher,
    PipelineMode,
    PromptCapture,
    SourceDoc,
    ask,
    folder_docs,
    publish_and_wait,
    serving_pipeline,
    with_generation,
)
from evals.questions import QuestionSet, SetFormatError, Threshold, load_set, load_thresholds
from evals.scoring import (
    BUILTIN_THRESHOLDS,
    Observed,
    aggregate,
    check_thresholds,
    score_question,
    unknown_metrics,
)
from ragstream import names
from ragstream.core.groundedness import GroundednessScorer
from ragstream.runtime.deps import Deps
from ragstream.settings import Settings
from schemas.ingestion import Acl

Progress = Callable[[int, int, str], None]  # (done, total, question id)


@dataclass
class RunResult:
    """The outcome of one run of a set: metrics, threshold failures, one record per question."""

    set_name: str
    set_path: str
    run_id: str
    started_at: str
    finished_at: str
    generation: str | None
    metrics: dict[str, float]
    thresholds: dict[str, Threshold]
    failures: list[str]
    questions: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    diff: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "set": self.set_name,
            "set_path": self.set_path,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "generation": self.generation,
            "passed": self.passed,
            "failures": list(self.failures),
            "metrics": dict(self.metrics),
            "thresholds": {k: t.model_dump(exclude_none=True) for k, t in sorted(self.thresholds.items())},
            "config": dict(self.config),
            "questions": list(self.questions),
            "diff": self.diff,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RunResult:
        return cls(
            set_name=obj["set"],
            set_path=obj.get("set_path", ""),
            run_id=obj["run_id"],
            started_at=obj.get("started_at", ""),
            finished_at=obj.get("finished_at", ""),
            generation=obj.get("generation"),
            metrics=dict(obj.get("metrics", {})),
            thresholds={k: Threshold.model_validate(v) for k, v in obj.get("thresholds", {}).items()},
            failures=list(obj.get("failures", [])),
            questions=list(obj.get("questions", [])),
            config=dict(obj.get("config", {})),
            diff=obj.get("diff"),
        )


class WeaviateView:
    """`StoreView` over one generation's collections (scoring reads ACL state and chunk texts)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def acl_of(self, tenant: str, document_ids: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
        if not document_ids or not self.store.has_tenant(tenant):
            return {}
        states = self.store.get_states(tenant, list(document_ids))
        return {d: (list(s.acl_principals), list(s.acl_groups)) for d, s in states.items()}

    def chunk_texts(self, tenant: str, chunk_ids: Sequence[str]) -> dict[str, str]:
        if not chunk_ids or not self.store.has_tenant(tenant):
            return {}
        return {cid: c.get("text", "") for cid, c in self.store.get_chunks(tenant, chunk_ids).items()}

    def document_texts(self, tenant: str, document_id: str) -> list[str]:
        return [c.get("text", "") for c in self.store.document_chunks(tenant, document_id)]


class Views:
    """One `WeaviateView` per index generation, over one client: a query is scored against the
    generation that answered it (the router may serve a promoted or pinned one)."""

    def __init__(self, settings: Settings) -> None:
        from ragstream.adapters.weaviate_client import connect

        self.settings = settings
        self.client = connect(settings.weaviate)
        self._views: dict[str, WeaviateView] = {}

    def for_generation(self, generation: str | None) -> WeaviateView:
        from ragstream.adapters.store import WeaviateStore

        gen = generation or self.settings.index.generation
        if gen not in self._views:
            store = WeaviateStore(self.client, *names.collections(self.settings.index, gen))
            self._views[gen] = WeaviateView(store)
        return self._views[gen]

    def close(self) -> None:
        self.client.close()


def answered_by(asked: Asked, requested: str | None) -> str | None:
    """The generation that served a query: the retrieval event's, else the one asked for."""
    gen = getattr(asked.retrieved, "generation", None) if asked.retrieved is not None else None
    return gen or getattr(asked.final, "generation", None) or requested


def set_documents(qset: QuestionSet) -> list[SourceDoc]:
    """The set's corpus folders and inline documents, as source changes to publish."""
    docs: list[SourceDoc] = []
    for c in qset.corpus:
        if not c.path.is_dir():
            raise SetFormatError(f"{qset.source}: corpus folder {c.path} not found")
        docs += folder_docs(c.path, c.tenant, Acl(principals=c.principals, groups=c.groups))
    for d in qset.documents:
        docs.append(
            SourceDoc(
                tenant=d.tenant,
                document_id=d.id,
                acl=Acl(principals=d.principals, groups=d.groups),
                content=d.text.encode(),
                mime_type=d.mime_type,
                title=d.title,
            )
        )
    return docs


def resolve_thresholds(
    qset: QuestionSet, thresholds: Mapping[str, Threshold] | str | Path | None
) -> dict[str, Threshold]:
    """The set's thresholds, overridden per metric by a thresholds file or mapping; names validated."""
    merged = dict(qset.thresholds)
    if isinstance(thresholds, str | Path):
        merged.update(load_thresholds(thresholds))
    elif thresholds:
        merged.update(thresholds)
    bad = unknown_metrics(merged)
    if bad:
        raise SetFormatError(f"unknown metric in thresholds: {', '.join(bad)}")
    return merged


def _served(asked: Asked, stage: Any) -> tuple[Any, ...] | None:
    """The passages the rerank consumer hands on for this retrieval: the same component (a pure function
    of its input, `consumers.serving.rerank.RerankStage`) applied to the retrieval event observed."""
    if asked.retrieved is None or stage is None:
        return None
    return tuple(stage.rerank(asked.retrieved).passages)


def rerank_stage(settings: Settings) -> Any:
    """The served rerank stage of these settings (`serving.rerank`, per-class caps and budgets)."""
    from consumers.serving.rerank import RerankStage
    from ragstream.adapters.reranker import from_spec

    return RerankStage(from_spec(settings.serving.rerank), settings.serving)


def _observe(asked: Asked, capture: PromptCapture | None, stage: Any = None) -> Observed:
    final = asked.final
    answered = final is not None and final.type == "QueryAnswered"
    prompt = capture.get(asked.query_id) if capture is not None else None
    return Observed(
        query_id=asked.query_id,
        passages=tuple(asked.retrieved.passages) if asked.retrieved is not None else (),
        answer=final.answer if answered else None,
        abstained=bool(final.abstained) if answered else False,
        citations=tuple(final.citations) if answered else (),
        prompt=prompt,
        # A prompt another process answered (consumers shared with another run) was not captured here.
        prompt_captured=prompt is not None,
        latency_ms=asked.latency_ms,
        timings_ms=dict(getattr(final, "timings_ms", {}) or {}),
        prompt_tokens=int(getattr(final, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(final, "completion_tokens", 0) or 0),
        error=asked.error,
        context_chunk_ids=(
            tuple(final.context_chunk_ids)
            if answered and "context_chunk_ids" in type(final).model_fields
            else None
        ),
        served_passages=_served(asked, stage),
    )


def _config(settings: Settings, started_locally: bool, captured: bool, deps: Deps | None) -> dict[str, Any]:
    sv = settings.serving
    llm = deps.llm if deps is not None else None
    policy = deps.policy if deps is not None else None
    return {
        "generation": settings.index.generation,
        "embedding_model": settings.embedding.model_id,
        "chunk_max_tokens": settings.ingest.chunk_max_tokens,
        "llm_model": getattr(llm, "model", None) or settings.llm.model,
        "chunking_policy": policy.policy_hash if policy is not None else "default",
        "reranker": sv.rerank,
        "fusion": sv.fusion,
        "hybrid_alpha": sv.hybrid_alpha,
        "candidate_k": sv.candidate_k,
        "min_relevance": sv.min_relevance,
        "pipeline": "local" if started_locally else "external",
        "prompt_captured": captured,
    }


async def run_set(
    settings: Settings,
    set_path: Path,
    *,
    generation: str | None = None,
    progress: bool = False,
    thresholds: Mapping[str, Threshold] | str | Path | None = None,
    pipeline: PipelineMode = "auto",
    deps: Deps | None = None,
    launch: Launcher | None = None,
    capture: PromptCapture | None = None,
    ingest: bool = True,
    concurrency: int = 1,
    timeout_s: float = 180.0,
    on_progress: Progress | None = None,
) -> RunResult:
    """Run a question set through the pipeline and score it.

    generation: the index generation to evaluate (passed on every query; a pipeline started here serves
    from it). pipeline: `auto` starts the consumers in this process unless serving consumers are deployed
    for these topics; `local`/`external` force it. deps/launch: the adapters and the launcher of a local
    pipeline (e.g. a chunking policy, the LLM; `application.pipeline.LocalPipeline`). ingest: publish
    the set's corpus and inline documents first (unchanged documents are no-ops) and wait until they are
    searchable.
    """
    qset = load_set(set_path)
    merged = resolve_thresholds(qset, thresholds)
    s = with_generation(settings, generation)
    started = datetime.now(UTC)
    run_id = started.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    scorer = GroundednessScorer()
    records: list[dict[str, Any]] = []
    async with serving_pipeline(s, pipeline, deps=deps, launch=launch, capture=capture) as (local, cap):
        if ingest:
            await publish_and_wait(s, set_documents(qset))
        views = await asyncio.to_thread(Views, s)
        bar = _bar(progress, len(qset.questions))
        try:
            records = await _ask_all(
                s, qset, views, scorer, cap, generation, concurrency, timeout_s, bar, on_progress
            )
        finally:
            if bar is not None:
                bar.stop()
            views.close()
    order = {q.id: i for i, q in enumerate(qset.questions)}
    records.sort(key=lambda r: order[r["id"]])
    metrics = aggregate(records)
    failures = check_thresholds(metrics, merged)
    return RunResult(
        set_name=qset.name,
        set_path=str(qset.source or set_path),
        run_id=run_id,
        started_at=started.isoformat(),
        finished_at=datetime.now(UTC).isoformat(),
        generation=generation,
        metrics=metrics,
        thresholds={**merged, **BUILTIN_THRESHOLDS},
        failures=failures,
        questions=records,
        config=_config(s, local, cap is not None, deps),
    )


def _bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]eval[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),  # progress on stderr: stdout's last line is the JSON result
        transient=True,
    )
    bar.start()
    bar.add_task("questions", total=total)
    return bar


async def _ask_all(
    s: Settings,
    qset: QuestionSet,
    views: Views,
    scorer: GroundednessScorer,
    cap: PromptCapture | None,
    generation: str | None,
    concurrency: int,
    timeout_s: float,
    bar: Any,
    on_progress: Progress | None,
) -> list[dict[str, Any]]:
    from ragstream.runtime.queries import QueryClient

    sem = asyncio.Semaphore(max(1, concurrency))
    records: list[dict[str, Any]] = []
    total = len(qset.questions)

    stage = await asyncio.to_thread(rerank_stage, s)
    async with QueryClient(s) as client:

        async def one(q: Any) -> None:
            async with sem:
                asked = await ask(
                    client,
                    tenant=q.tenant,
                    subject=q.user,
                    groups=q.groups,
                    question=q.question,
                    top_k=q.top_k,
                    request_class=q.request_class,
                    generation=generation,
                    timeout_s=timeout_s,
                )
            view = views.for_generation(answered_by(asked, generation))
            rec = await asyncio.to_thread(score_question, q, _observe(asked, cap, stage), view, scorer)
            rec["generation"] = answered_by(asked, generation)
            records.append(rec)
            if bar is not None:
                bar.update(bar.task_ids[0], advance=1, description=q.id)
            if on_progress is not None:
                on_progress(len(records), total, q.id)

        await asyncio.gather(*(one(q) for q in qset.questions))
    return records


def run_set_sync(settings: Settings, set_path: Path, **kwargs: Any) -> RunResult:
    """`run_set` for synchronous callers (a Kubernetes Job entry point, scripts)."""
    return asyncio.run(run_set(settings, set_path, **kwargs))


def elapsed_s(result: RunResult) -> float:
    """Wall time of a run in seconds."""
    try:
        a = datetime.fromisoformat(result.started_at)
        b = datetime.fromisoformat(result.finished_at)
    except ValueError:
        return 0.0
    return (b - a).total_seconds()


__all__ = ["RunResult", "elapsed_s", "resolve_thresholds", "run_set", "run_set_sync", "set_documents"]
