"""Reports: diff against the previous run, Markdown/HTML/SVG output, result storage, RunResult JSON."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from evals.questions import Threshold
from evals.report import (
    diff_results,
    html_report,
    markdown_report,
    previous_result,
    svg_histogram,
    svg_outcomes,
    write_run,
)
from evals.runner import RunResult

pytestmark = pytest.mark.unit


def question(qid: str, ok: bool, **kw: Any) -> dict[str, Any]:
    base = {
        "id": qid,
        "question": f"question {qid}?",
        "ok": ok,
        "judged": True,
        "hit": ok,
        "ndcg_at_10": 1.0 if ok else 0.0,
        "request_class": "interactive",
        "latency_ms": 150.0,
        "answer": "An answer <with> | pipes [1].",
        "abstained": False,
        "citations": [{"id": "1", "document_id": "d.md"}],
        "exposures": {},
        "groundedness": 1.0,
        "retrieved_docs": ["d.md"],
        "error": None,
    }
    return {**base, **kw}


def result(run_id: str, recall: float, qs: list[dict[str, Any]], failures: list[str] = ()) -> dict[str, Any]:
    return RunResult(
        set_name="demo set",
        set_path="/x/demo.yaml",
        run_id=run_id,
        started_at="2025-01-01T00:00:00+00:00",
        finished_at="2025-01-01T00:01:00+00:00",
        generation="g0002",
        metrics={
            "recall_at_5": recall,
            "unauthorized_document_rate": 0.0,
            "latency_e2e_ms_p95": 200.0,
            "latency_interactive_retrieval_ms_p50": 12.0,
            "error_rate": 0.0,
        },
        thresholds={"recall_at_5": Threshold(min=0.8), "unauthorized_document_rate": Threshold(max=0)},
        failures=list(failures),
        questions=qs,
        config={"llm_model": "stub"},
    ).to_json()


def test_diff_marks_better_worse_and_changed_questions() -> None:
    old = [question("a", True), question("b", True), question("gone", True)]
    prev = result("20250101T000000-a", 0.9, old)
    cur = result("20250102T000000-b", 0.6, [question("a", True), question("b", False), question("new", True)])
    cur["metrics"]["error_rate"] = 0.0
    cur["metrics"]["latency_e2e_ms_p95"] = 150.0
    cur["metrics"]["latency_interactive_retrieval_ms_p50"] = 13.0  # within run-to-run noise
    d = diff_results(prev, cur)
    assert d["metrics"]["recall_at_5"]["change"] == "worse"
    assert d["metrics"]["recall_at_5"]["delta"] == pytest.approx(-0.3)
    assert d["metrics"]["latency_e2e_ms_p95"]["change"] == "better"  # lower latency is better
    assert d["metrics"]["error_rate"]["change"] == "same"
    assert d["metrics"]["latency_interactive_retrieval_ms_p50"]["change"] == "same"
    assert d["broken"] == ["b"] and d["fixed"] == []
    assert d["added_questions"] == ["new"] and d["removed_questions"] == ["gone"]
    assert "recall_at_5" in d["worse"] and d["previous_run_id"] == "20250101T000000-a"


def test_write_run_stores_and_diffs_against_the_previous_run(tmp_path: Path) -> None:
    first = result("20250101T000000-a", 0.9, [question("a", True)])
    p1 = write_run(first, root=tmp_path)
    assert first["diff"] is None and p1["result"].parent.parent.name == "demo-set"
    second = result("20250102T000000-b", 0.5, [question("a", False)], ["recall_at_5 = 0.5, needs >= 0.8"])
    paths = write_run(second, root=tmp_path)
    assert second["diff"]["previous_run_id"] == "20250101T000000-a" and second["diff"]["broken"] == ["a"]
    stored = json.loads(paths["result"].read_text())
    assert stored["run_id"] == "20250102T000000-b" and stored["diff"]["worse"] == ["recall_at_5"]
    assert previous_result(tmp_path, "demo set")["run_id"] == "20250102T000000-b"
    assert previous_result(tmp_path, "demo set", before_run_id="20250102")["run_id"] == "20250101T000000-a"
    md = paths["markdown"].read_text()
    assert "FAILED" in md and "recall_at_5 = 0.5, needs >= 0.8" in md and "Questions now failing: a" in md
    assert "![outcomes](outcomes.svg)" in md and (paths["markdown"].parent / "outcomes.svg").is_file()
    page = paths["html"].read_text()
    assert page.count("<svg") >= 4 and "An answer &lt;with&gt;" in page and "<with>" not in page


def test_markdown_tables_and_latency() -> None:
    r = result("20250101T000000-a", 0.9, [question("a", True)])
    md = markdown_report(r)
    assert "# Evaluation: demo set — PASSED" in md
    assert "| recall_at_5 | 0.9000 | >= 0.8 | ok |" in md
    assert "| unauthorized_document_rate | 0.0000 | <= 0 | ok |" in md
    assert "| interactive_retrieval | 12.0 | - | - |" in md
    assert "An answer <with> \\| pipes" in md  # pipes escaped inside the table
    assert "No previous run of this set." in md


def test_svgs_are_well_formed() -> None:
    for svg in (
        svg_histogram([0.1, 0.5, 0.5, 0.9, 1.0], title="t", xlabel="x", lo=0, hi=1),
        svg_histogram([], title="empty", xlabel="x"),
        svg_histogram([3.0, 3.0], title="one value", xlabel="ms"),
        svg_outcomes([question("a", True), question("b<&>", False, hit=None)]),
    ):
        ET.fromstring(svg)  # raises on malformed XML
    assert "no data" in svg_histogram([], title="empty", xlabel="x")


def test_html_escapes_everything_from_the_run() -> None:
    r = result("<script>", 0.9, [question("<img src=x>", True, answer="<script>alert(1)</script>")])
    page = html_report(r, {})
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_run_result_round_trip() -> None:
    r = result("20250101T000000-a", 0.5, [question("a", False)], ["recall_at_5 = 0.5, needs >= 0.8"])
    back = RunResult.from_json(r)
    assert not back.passed and back.metrics["recall_at_5"] == 0.5
    assert back.thresholds["recall_at_5"].min == 0.8 and back.to_json() == r
