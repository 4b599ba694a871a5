"""Question-set format: loader (YAML and JSONL), defaults, validation errors, thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.questions import SetFormatError, Threshold, load_set, load_thresholds, parse_thresholds

pytestmark = pytest.mark.unit
SETS = Path(__file__).resolve().parents[2] / "evals" / "sets"


def _write(tmp_path: Path, text: str, name: str = "set.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_demo_set_loads_and_resolves_the_corpus() -> None:
    s = load_set(SETS / "demo.yaml")
    assert s.name == "demo" and len(s.questions) >= 10
    assert s.corpus[0].path.is_dir() and (s.corpus[0].path / "rag-evaluation.txt").is_file()
    assert {"eval-demo", "eval-other"} <= set(s.tenants())
    q = next(q for q in s.questions if q.id == "recall-at-k")
    assert q.tenant == "eval-demo" and q.groups == ("everyone",) and q.top_k == 5  # from defaults
    assert q.expected_docs == {"rag-evaluation.txt": 1} and q.judged
    assert s.thresholds["unauthorized_document_rate"] == Threshold(min=0, max=0)
    assert any(q.expect_abstain for q in s.questions)


def test_defaults_are_overridden_per_question(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        """
name: t
defaults: {tenant: a, user: u, groups: [everyone]}
questions:
  - {question: "one?", expected_docs: {d1: 2, d2: 1}}
  - {id: two, question: "two?", tenant: b, groups: [x, y], expect_abstain: true}
""",
    )
    s = load_set(p)
    assert s.questions[0].id == "q001" and s.questions[0].expected_docs == {"d1": 2, "d2": 1}
    assert s.questions[1].tenant == "b" and s.questions[1].groups == ("x", "y")
    assert s.questions[1].expect_abstain and not s.questions[1].judged


def test_jsonl_with_set_header(tmp_path: Path) -> None:
    rows = [
        {
            "set": {
                "name": "j",
                "thresholds": {"recall_at_5": ">= 0.5"},
                "defaults": {"tenant": "t", "user": "u"},
            }
        },
        {"id": "a", "question": "q?", "expected_docs": ["d"]},
        {"id": "b", "question": "r?", "expect_abstain": True},
    ]
    p = _write(tmp_path, "\n".join(json.dumps(r) for r in rows) + "\n", "s.jsonl")
    s = load_set(p)
    assert s.name == "j" and [q.id for q in s.questions] == ["a", "b"]
    assert s.thresholds["recall_at_5"].min == 0.5


Q = "{id: a, question: q, tenant: t, user: u"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("name: x\nquestions: []\n", "at least one question"),
        (f"name: x\nquestions:\n  - {Q}}}\n  - {Q}}}\n", "duplicate question id"),
        ("name: x\nquestions:\n  - {id: a, question: q, user: u}\n", "tenant"),
        (f"name: x\nquestions:\n  - {Q}, expect_abstain: true, expected_docs: [d]}}\n", "expect_abstain"),
        (f"name: x\nquestions:\n  - {Q}, expected_docs: [d], must_never_cite: [d]}}\n", "both expected"),
        (f"name: x\nquestions:\n  - {Q}, colour: red}}\n", "colour"),
        (f"name: x\nthresholds: {{recall_at_5: 'about 0.8'}}\nquestions:\n  - {Q}}}\n", "recall_at_5"),
        (f"name: x\nquestions:\n  - {Q}, expected_chunks: [{{document: d}}]}}\n", "contains"),
        ("[1, 2]\n", "mapping"),
        ("name: x\nquestions: {a: 1}\n", "must be a list"),
    ],
)
def test_invalid_sets_name_the_problem(tmp_path: Path, body: str, needle: str) -> None:
    p = _write(tmp_path, body)
    with pytest.raises(SetFormatError) as exc:
        load_set(p)
    assert needle in str(exc.value) and str(p) in str(exc.value)


def test_bad_json_line_names_the_line(tmp_path: Path) -> None:
    p = _write(tmp_path, '{"id": "a", "question": "q", "tenant": "t", "user": "u"}\n{oops\n', "s.jsonl")
    with pytest.raises(SetFormatError, match=r"s\.jsonl:2"):
        load_set(p)


def test_missing_file() -> None:
    with pytest.raises(SetFormatError, match="not found"):
        load_set("/nonexistent/set.yaml")


@pytest.mark.parametrize(
    ("raw", "value", "ok"),
    [
        (">= 0.8", 0.8, True),
        (">= 0.8", 0.79, False),
        ("<= 0.05", 0.05, True),
        ("<= 0.05", 0.06, False),
        ("== 0", 0.0, True),
        ("== 0", 0.001, False),
        ({"min": 0.5, "max": 0.9}, 0.95, False),
        ({"max": 100}, 50.0, True),
        (0.7, 0.7, True),
    ],
)
def test_threshold_forms(raw: object, value: float, ok: bool) -> None:
    assert Threshold.parse(raw).check(value) is ok


def test_threshold_needs_a_bound_and_a_known_operator() -> None:
    with pytest.raises(SetFormatError):
        parse_thresholds({"x": {}})
    with pytest.raises(SetFormatError):
        parse_thresholds({"x": "=> 3"})
    assert Threshold(min=0.8).describe() == ">= 0.8" and Threshold(min=0, max=0).describe() == "== 0"


def test_thresholds_file_plain_or_nested(tmp_path: Path) -> None:
    a = _write(tmp_path, "recall_at_5: '>= 0.9'\n", "a.yaml")
    b = _write(tmp_path, "thresholds:\n  ndcg_at_10: {min: 0.5}\n", "b.yaml")
    assert load_thresholds(a)["recall_at_5"].min == 0.9
    assert load_thresholds(b)["ndcg_at_10"].min == 0.5
