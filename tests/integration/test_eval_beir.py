"""`eval beir` on the real stack with a small BEIR-format directory written here: the corpus goes through
the ingestion pipeline into a fingerprinted tenant, a second run reuses it, every mode is scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from application.pipeline import LocalPipeline
from evals.beir_eval import MODES, evaluate_beir

pytestmark = pytest.mark.integration

DOCS = {
    "d1": (
        "Aspirin and stroke",
        "Daily low-dose aspirin reduced the risk of a first ischemic stroke in women.",
    ),
    "d2": ("Statins", "Statin therapy lowers LDL cholesterol and reduces cardiovascular events."),
    "d3": ("Sleep and memory", "Sleep deprivation impairs the consolidation of declarative memories."),
    "d4": ("Coffee", "Moderate coffee consumption is not associated with higher mortality."),
    "d5": ("Vitamin D", "Vitamin D supplements did not prevent fractures in older adults."),
    "d6": ("Exercise", "Regular aerobic exercise improves insulin sensitivity in type 2 diabetes."),
    "d7": ("Antibiotics", "Antibiotic overuse drives the spread of resistant bacteria in hospitals."),
    "d8": ("Smoking", "Smoking cessation lowers the incidence of lung cancer within ten years."),
}
QUERIES = {
    "q1": ("Aspirin lowers stroke risk.", "d1"),
    "q2": ("Lack of sleep harms memory consolidation.", "d3"),
    "q3": ("Exercise increases insulin sensitivity in diabetic patients.", "d6"),
    "q4": ("Quitting smoking reduces lung cancer.", "d8"),
}


def write_beir(root: Path) -> Path:
    d = root / "minibeir"
    (d / "qrels").mkdir(parents=True)
    with (d / "corpus.jsonl").open("w") as f:
        for doc_id, (title, text) in DOCS.items():
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (d / "queries.jsonl").open("w") as f:
        for qid, (text, _) in QUERIES.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{doc}\t1" for q, (_, doc) in QUERIES.items()]
    (d / "qrels" / "test.tsv").write_text("\r\n".join(rows) + "\r\n")
    return d


async def test_beir_ingests_once_and_scores_every_mode(isolated, tmp_path) -> None:
    directory = write_beir(tmp_path)
    first = await evaluate_beir(isolated, directory, MODES, launch=LocalPipeline)
    assert not first.ingest["reused"] and first.ingest["documents"] == len(DOCS)
    assert first.tenant.startswith("beir-minibeir-")
    out = first.to_json()
    assert set(out) == set(MODES)
    for mode, row in out.items():
        assert set(row) >= {"ndcg_at_10", "recall_at_100", "mrr_at_10"}, mode
        assert row["queries"] == len(QUERIES) and row["recall_at_100"] == 1.0, mode
        assert row["ndcg_at_10"] >= 0.75, (mode, row)
    second = await evaluate_beir(isolated, directory, ("bm25",), launch=LocalPipeline)
    assert second.ingest["reused"] and second.tenant == first.tenant
    assert second.modes["bm25"].ndcg_at_10 == pytest.approx(first.modes["bm25"].ndcg_at_10)
