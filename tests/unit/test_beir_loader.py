"""BEIR loader: CRLF qrels, graded scores, judged queries only, fingerprint, errors naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.beir import BeirFormatError, load_beir

pytestmark = pytest.mark.unit

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "scifact"


def _write_beir(root: Path, qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    docs = [
        {"_id": "d1", "title": "Kafka", "text": "A distributed log."},
        {"_id": "d2", "title": "", "text": "Weaviate stores vectors."},
        {"_id": "d3", "text": "No title field at all."},
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    queries = [
        {"_id": "q1", "text": "what is kafka"},
        {"_id": "q2", "text": "vectors"},
        {"_id": "q3", "text": "x"},
    ]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_bytes(qrels.encode())
    return root


def test_loads_crlf_qrels_with_graded_scores(tmp_path: Path) -> None:
    root = _write_beir(
        tmp_path / "tiny", "query-id\tcorpus-id\tscore\r\nq1\td1\t2\r\nq1\td2\t1\r\nq2\td2\t1\r\n"
    )
    ds = load_beir(root)
    assert ds.name == "tiny"
    assert ds.qrels == {"q1": {"d1": 2, "d2": 1}, "q2": {"d2": 1}}
    assert ds.queries == {"q1": "what is kafka", "q2": "vectors"}  # q3 has no judgments
    assert ds.corpus["d1"].title == "Kafka" and ds.corpus["d3"].title == ""
    assert len(ds.fingerprint) == 64


def test_fingerprint_changes_with_content(tmp_path: Path) -> None:
    a = load_beir(_write_beir(tmp_path / "a", "query-id\tcorpus-id\tscore\nq1\td1\t1\n"))
    b = load_beir(_write_beir(tmp_path / "b", "query-id\tcorpus-id\tscore\nq1\td1\t1\n"))
    c = load_beir(_write_beir(tmp_path / "c", "query-id\tcorpus-id\tscore\nq1\td1\t2\n"))
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_malformed_qrels_line_names_file_and_line(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "bad", "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td2\r\n")
    with pytest.raises(BeirFormatError, match=r"test\.tsv:3: expected 3 tab-separated columns"):
        load_beir(root)


def test_non_integer_score_is_an_error(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "bad", "query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(BeirFormatError, match=r"test\.tsv:2: score 'high'"):
        load_beir(root)


def test_malformed_corpus_json_names_file_and_line(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "bad", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with (root / "corpus.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"_id": "d4", "text": \n')
    with pytest.raises(BeirFormatError, match=r"corpus\.jsonl:4: invalid JSON"):
        load_beir(root)


def test_missing_text_field_is_an_error(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "bad", "query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (root / "queries.jsonl").write_text('{"_id": "q1"}\n', encoding="utf-8")
    with pytest.raises(BeirFormatError, match=r"queries\.jsonl:1: missing field 'text'"):
        load_beir(root)


def test_missing_qrels_file(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "bad", "")
    (root / "qrels" / "test.tsv").unlink()
    with pytest.raises(BeirFormatError, match=r"test\.tsv: file not found"):
        load_beir(root)


def test_scifact_when_present() -> None:
    if not SCIFACT.is_dir():
        pytest.skip(f"{SCIFACT} not present")
    ds = load_beir(SCIFACT)
    assert len(ds.corpus) == 5183
    assert len(ds.queries) == 300
    assert sum(len(v) for v in ds.qrels.values()) == 339
    assert set(ds.queries) == set(ds.qrels)
    assert all(d in ds.corpus for docs in ds.qrels.values() for d in docs)
