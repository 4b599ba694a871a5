"""The promotion gate's evaluator from the evaluation plane: a question set run against one generation.

`ragstream.generations.gate.Gate(runner=runner_evaluator)` (the CLI wires it): the runtime does not
import the evaluation plane; it receives this function.
"""

from __future__ import annotations

from pathlib import Path

from evals.runner import run_set
from ragstream.generations.gate import EvalOutcome, GateUnavailableError
from ragstream.runtime.queries import QueryClient
from ragstream.settings import Settings


async def serving_answers(settings: Settings, timeout_s: float = 20.0) -> bool:
    """Whether serving consumers answer at all: one probe query (a tenant that has no data) end to end."""
    try:
        async with QueryClient(settings) as client:
            out = await client.ask("ragstream-gate-probe", "gate", (), "probe", timeout_s=timeout_s)
    except TimeoutError:
        return False
    return out["final"].type in ("QueryAnswered", "QueryFailed")


async def runner_evaluator(settings: Settings, set_path: str, generation: str) -> EvalOutcome:
    """The evaluation plane's runner (`evals.runner.run_set`) with the query pinned to `generation`."""
    if not await serving_answers(settings):
        raise GateUnavailableError(
            "the gate asks the deployed serving consumers (retrieval, rerank, generation); none are running"
        )
    # The candidate is judged on what its build holds: the set's documents are not re-published (the
    # live pipeline would index them under the live policy), and queries name the candidate explicitly.
    result = await run_set(
        settings, Path(set_path), generation=generation, progress=False, ingest=False, pipeline="external"
    )
    failures = [f if isinstance(f, str | int | float | dict | list) else str(f) for f in result.failures]
    to_json = getattr(result, "to_json", None)
    detail = to_json() if callable(to_json) else {}
    return EvalOutcome(
        set=set_path,
        evaluator="evals.runner",
        passed=bool(result.passed),
        metrics={k: float(v) for k, v in dict(result.metrics).items() if isinstance(v, int | float)},
        failures=failures,
        detail=detail if isinstance(detail, dict) else {"result": detail},
    )
