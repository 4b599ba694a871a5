"""The evaluation gate on the real stack: the demo set passes on the default configuration and fails on a
chunking policy that drops most of the text. Queries go through the pipeline as events (stub LLM)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from application.pipeline import LocalPipeline
from evals.report import write_run
from evals.runner import run_set
from ragstream.adapters.llm import ExtractiveStub
from ragstream.core.chunk import ChunkingPolicy
from ragstream.runtime.deps import Deps

pytestmark = pytest.mark.integration
DEMO = Path(__file__).resolve().parents[2] / "evals" / "sets" / "demo.yaml"
# Keeps only the first few words of every document (see ragstream/core/chunk.py).
DEGRADED = ChunkingPolicy(max_chunks_per_document=1, max_tokens=16)


def _deps(settings, embedder, **changes: object) -> Deps:
    return Deps(settings, embedder=embedder, llm=ExtractiveStub(), **changes)  # type: ignore[arg-type]


async def test_gate_passes_on_the_default_configuration(isolated, embedder, tmp_path) -> None:
    result = await run_set(
        isolated, DEMO, pipeline="local", deps=_deps(isolated, embedder), launch=LocalPipeline
    )
    m = result.metrics
    assert result.passed, result.failures
    assert m["recall_at_5"] >= 0.8 and m["unauthorized_document_rate"] == 0.0
    assert m["abstention_accuracy"] >= 0.6 and m["citation_in_prompt_rate"] == 1.0
    assert result.config["prompt_captured"] and result.config["pipeline"] == "local"
    # The restricted budget reaches the finance member and no one else.
    by_id = {q["id"]: q for q in result.questions}
    assert by_id["restricted-budget-allowed"]["hit"]
    assert "finance/budget-2025.md" not in by_id["restricted-budget-denied"]["retrieved_docs"]
    assert "latency_interactive_e2e_ms_p95" in m and m["prompt_tokens_total"] > 0
    paths = write_run(result.to_json(), root=tmp_path)
    assert "PASSED" in paths["markdown"].read_text()


async def test_gate_fails_on_a_degraded_chunking_policy(isolated, embedder, tmp_path) -> None:
    result = await run_set(
        isolated,
        DEMO,
        pipeline="local",
        deps=_deps(isolated, embedder, policy=DEGRADED),
        launch=LocalPipeline,
    )
    assert not result.passed
    assert any(f.startswith("chunk_recall_at_10") for f in result.failures), result.failures
    assert result.metrics["chunk_recall_at_10"] < 0.8
    assert result.metrics["unauthorized_document_rate"] == 0.0  # worse answers, still no leak
    paths = write_run(result.to_json(), root=tmp_path)
    assert "FAILED" in paths["markdown"].read_text()


async def test_gate_uses_deployed_consumers_when_they_run(isolated, embedder) -> None:
    """What the promotion gate does: consumers run elsewhere, `auto` finds them and only asks."""
    from evals.asking import serving_is_deployed

    assert not await serving_is_deployed(isolated)
    async with LocalPipeline(isolated, deps=_deps(isolated, embedder)):
        for _ in range(50):  # the groups settle after their first rebalance
            if await serving_is_deployed(isolated):
                break
            await asyncio.sleep(0.5)
        assert await serving_is_deployed(isolated)
        result = await run_set(isolated, DEMO, generation=isolated.index.generation)
    assert result.config["pipeline"] == "external" and not result.config["prompt_captured"]
    assert result.passed, result.failures
    # Without a captured prompt, citations are checked against the answer's context chunk ids.
    assert result.metrics["citation_in_prompt_rate"] == 1.0
    assert {q["generation"] for q in result.questions} == {isolated.index.generation}
