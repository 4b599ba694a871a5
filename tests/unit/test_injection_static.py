"""The injection defense never removes honest content: no expected fact of the development sets is lost,
and ordinary documents (SciFact abstracts, HotpotQA passages) lose nothing to a removal."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from evals.injection.run import CASES, load_cases
from evals.injection.static import DATASETS, _jsonl, benign_report, case_report

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["cases.yaml", "heldout.yaml"])  # heldout2.yaml is for measurement only
def test_no_expected_fact_is_removed(name: str) -> None:
    report = case_report(load_cases(CASES.parent / name))
    assert report["facts_lost"] == []


@pytest.mark.parametrize(
    ("path", "key"),
    [(Path("scifact/corpus.jsonl"), "text"), (Path("halueval-qa/dev.jsonl"), "knowledge")],
)
def test_ordinary_documents_lose_nothing_when_present(path: Path, key: str) -> None:
    if not (DATASETS / path).exists():
        pytest.skip(f"{DATASETS / path} not present")
    report = benign_report(itertools.islice(_jsonl(DATASETS / path, key), 1500))
    assert report["docs"] == 1500
    assert report["with_removal"] == 0, report["removal_examples"]
