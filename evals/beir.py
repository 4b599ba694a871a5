"""BEIR-format dataset loader: corpus.jsonl, queries.jsonl, qrels/<split>.tsv, with a content fingerprint.

Only queries that have judgments in the split are kept, so every metric averages over judged queries.
Malformed input raises `BeirFormatError` naming the file and the 1-based line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QRELS_HEADER = ("query-id", "corpus-id", "score")


class BeirFormatError(ValueError):
    """Malformed BEIR input; the message names the file and the line."""

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class BeirDoc:
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class BeirDataset:
    name: str
    corpus: dict[str, BeirDoc]
    queries: dict[str, str]  # only queries with judgments in the split
    qrels: dict[str, dict[str, int]]  # query id -> corpus id -> graded relevance
    fingerprint: str = field(default="")  # sha256 over the three files' bytes
    split: str = "test"


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise BeirFormatError(path, None, "file not found")
    with path.open(encoding="utf-8") as fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise BeirFormatError(path, n, f"invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise BeirFormatError(path, n, "expected a JSON object")
            yield n, obj


def _str_field(path: Path, n: int, obj: dict[str, Any], key: str, required: bool) -> str:
    val = obj.get(key)
    if val is None:
        if required:
            raise BeirFormatError(path, n, f"missing field {key!r}")
        return ""
    if isinstance(val, int | float) and key == "_id":
        return str(val)  # some BEIR dumps write numeric ids
    if not isinstance(val, str):
        raise BeirFormatError(path, n, f"field {key!r} must be a string")
    return val


def load_corpus(path: Path) -> dict[str, BeirDoc]:
    corpus: dict[str, BeirDoc] = {}
    for n, obj in _jsonl(path):
        doc_id = _str_field(path, n, obj, "_id", required=True)
        if doc_id in corpus:
            raise BeirFormatError(path, n, f"duplicate _id {doc_id!r}")
        corpus[doc_id] = BeirDoc(
            doc_id=doc_id,
            title=_str_field(path, n, obj, "title", required=False),
            text=_str_field(path, n, obj, "text", required=True),
        )
    return corpus


def load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for n, obj in _jsonl(path):
        qid = _str_field(path, n, obj, "_id", required=True)
        if qid in queries:
            raise BeirFormatError(path, n, f"duplicate _id {qid!r}")
        queries[qid] = _str_field(path, n, obj, "text", required=True)
    return queries


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise BeirFormatError(path, None, "file not found")
    qrels: dict[str, dict[str, int]] = {}
    # newline="" plus rstrip keeps CRLF (as BEIR writes it) and LF files alike
    with path.open(encoding="utf-8", newline="") as fh:
        for n, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t")
            if n == 1 and tuple(c.strip().lower() for c in cols) == QRELS_HEADER:
                continue
            if len(cols) != 3:
                raise BeirFormatError(path, n, f"expected 3 tab-separated columns, got {len(cols)}")
            qid, did, score = (c.strip() for c in cols)
            if not qid or not did:
                raise BeirFormatError(path, n, "empty query-id or corpus-id")
            try:
                rel = int(score)
            except ValueError:
                raise BeirFormatError(path, n, f"score {score!r} is not an integer") from None
            qrels.setdefault(qid, {})[did] = rel
    return qrels


def fingerprint(paths: list[Path]) -> str:
    """sha256 over each file's name and bytes, in order: same value means the same corpus and judgments."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0")
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def load_beir(directory: str | Path, split: str = "test", name: str | None = None) -> BeirDataset:
    """Load a BEIR directory; only queries judged in `split` are kept."""
    root = Path(directory)
    if not root.is_dir():
        raise BeirFormatError(root, None, "not a directory")
    corpus_p, queries_p, qrels_p = (
        root / "corpus.jsonl",
        root / "queries.jsonl",
        root / "qrels" / f"{split}.tsv",
    )
    corpus = load_corpus(corpus_p)
    all_queries = load_queries(queries_p)
    raw_qrels = load_qrels(qrels_p)
    unknown_q = sorted(q for q in raw_qrels if q not in all_queries)
    if unknown_q:
        raise BeirFormatError(
            qrels_p, None, f"{len(unknown_q)} query ids not in queries.jsonl, e.g. {unknown_q[0]!r}"
        )
    # qrels stay as judged (trec_eval semantics: the ideal DCG counts every judged document)
    qrels = raw_qrels
    queries = {q: all_queries[q] for q in qrels}
    return BeirDataset(
        name=name or root.name,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        fingerprint=fingerprint([corpus_p, queries_p, qrels_p]),
        split=split,
    )
