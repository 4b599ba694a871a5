"""The promotion gate: the configured evaluation sets, run against the candidate generation.

A set is named `path` (run by `evals.runner.run_set`, the evaluation plane's runner and thresholds, through
the deployed serving consumers with every query pinned to the candidate; the set's documents must already be
in the source topic, e.g. from a `ragstream eval run` against live) or
`recall:path` (a built-in retrieval check that needs no serving pipeline: hybrid search in the candidate,
recall@k of the expected documents against a minimum). Every outcome is recorded on the candidate.

Built-in set format (JSON):
    {"tenant": "acme", "k": 5, "min_recall": 0.8, "principal": "eval", "groups": ["everyone"],
     "questions": [{"question": "...", "documents": ["doc-id", ...]}, ...]}
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ragstream import names
from ragstream.adapters.store import WeaviateStore
from ragstream.ports import AccessFilter, Embedder
from ragstream.settings import Settings


class EvalOutcome(BaseModel):
    """One evaluation set's verdict on one generation."""

    model_config = ConfigDict(frozen=True)
    set: str
    evaluator: str
    passed: bool
    metrics: dict[str, float] = {}
    failures: list[Any] = []
    detail: dict[str, Any] = {}


Evaluator = Callable[[Settings, str, str], Awaitable[EvalOutcome]]


class GateUnavailableError(RuntimeError):
    """The gate cannot run (no serving consumers to ask): promotion does not happen."""


class RecallEvaluator:
    """Built-in: recall@k of expected documents, searched directly in the candidate's collection."""

    def __init__(self, client: Any, embedder: Embedder) -> None:
        self.client = client
        self.embedder = embedder

    async def __call__(self, settings: Settings, set_path: str, generation: str) -> EvalOutcome:
        return await asyncio.to_thread(self.run, settings, set_path, generation)

    def run(self, settings: Settings, set_path: str, generation: str) -> EvalOutcome:
        spec = json.loads(Path(set_path).read_text())
        tenant, k, minimum = spec["tenant"], int(spec.get("k", 5)), float(spec.get("min_recall", 0.8))
        store = WeaviateStore(self.client, *names.collections(settings.index, generation))
        acl = AccessFilter((spec.get("principal", "eval"),), tuple(spec.get("groups", ["everyone"])))
        failures: list[Any] = []
        recalls: list[float] = []
        empty = 0
        for q in spec["questions"]:
            expected = set(q["documents"])
            docs: list[str] = []
            if store.has_tenant(tenant):
                vector = self.embedder.embed([q["question"]])[0]
                hits = store.search(
                    tenant,
                    q["question"],
                    vector,
                    limit=max(k * 4, 20),
                    acl=acl,
                    alpha=settings.serving.hybrid_alpha,
                    fusion=settings.serving.fusion,
                )
                for h in hits:
                    d = h.properties["document_id"]
                    if d not in docs:
                        docs.append(d)
            empty += not docs
            recall = len(expected & set(docs[:k])) / len(expected) if expected else 1.0
            recalls.append(recall)
            if recall < 1.0:
                failures.append({"question": q["question"], "expected": sorted(expected), "got": docs[:k]})
        mean = sum(recalls) / len(recalls) if recalls else 0.0
        metrics = {f"recall@{k}": round(mean, 4), "empty_rate": round(empty / max(len(recalls), 1), 4)}
        return EvalOutcome(
            set=set_path,
            evaluator="recall",
            passed=mean >= minimum and empty == 0,
            metrics=metrics,
            failures=failures,
            detail={"threshold": minimum, "questions": len(recalls), "tenant": tenant},
        )


class Gate:
    """Runs every configured set against a generation; passes only if every set passes."""

    def __init__(
        self,
        sets: tuple[str, ...],
        *,
        recall: Evaluator | None = None,
        runner: Evaluator | None = None,
    ) -> None:
        self.sets = sets
        self.recall = recall
        self.runner = runner

    async def run(self, settings: Settings, generation: str) -> list[EvalOutcome]:
        outcomes: list[EvalOutcome] = []
        for entry in self.sets:
            kind, _, path = entry.partition(":") if entry.startswith("recall:") else ("", "", entry)
            if kind == "recall":
                if self.recall is None:
                    raise ValueError("a recall: set needs an embedder for the candidate's model")
                outcomes.append(await self.recall(settings, path, generation))
            else:
                if self.runner is None:
                    raise ValueError(f"set {path!r} needs an evaluator (the evaluation plane's runner)")
                outcomes.append(await self.runner(settings, path, generation))
        return outcomes
