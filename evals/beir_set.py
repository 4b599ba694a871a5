"""A question set (`ragstream eval run`) written from a BEIR directory: each judged test query with its
graded `expected_docs`, and the whole corpus as inline documents of the tenant `eval beir` indexes it
into (same ids, text, title and ACL), so both commands rank the same chunks for the same caller."""

from __future__ import annotations

import json
from pathlib import Path

from evals.beir import BeirDataset, load_beir
from evals.beir_eval import EVAL_GROUP, EVAL_SUBJECT, corpus_tenant
from ragstream.settings import Settings


def set_rows(
    ds: BeirDataset, tenant: str, *, limit: int | None, top_k: int, request_class: str
) -> list[dict[str, object]]:
    """The JSONL rows: the `set` header (name, inline corpus), then one question per judged query."""
    qids = sorted(ds.queries)[:limit] if limit else sorted(ds.queries)
    documents = [
        {
            "id": d.doc_id,
            "tenant": tenant,
            "text": d.text or d.title or d.doc_id,
            "title": d.title,
            "mime_type": "text/plain",
            "groups": [EVAL_GROUP],
        }
        for d in ds.corpus.values()
    ]
    head = {
        "set": {
            "name": f"beir-{ds.name}",
            "description": f"BEIR {ds.name} {ds.split} queries, graded judgments (eval beir-set)",
            "documents": documents,
        }
    }
    questions = [
        {
            "id": f"q-{qid}",
            "question": ds.queries[qid],
            "tenant": tenant,
            "user": EVAL_SUBJECT,
            "groups": [EVAL_GROUP],
            "request_class": request_class,
            "top_k": top_k,
            "expected_docs": {d: r for d, r in ds.qrels[qid].items() if r > 0},
            "tags": ["beir", ds.name],
        }
        for qid in qids
    ]
    return [head, *questions]


def write_beir_set(
    settings: Settings,
    directory: Path,
    out: Path,
    *,
    limit: int | None = None,
    top_k: int = 50,
    request_class: str = "batch",
) -> int:
    """Write the set to `out` (JSONL); returns the number of questions."""
    ds = load_beir(directory)
    rows = set_rows(ds, corpus_tenant(ds, settings), limit=limit, top_k=top_k, request_class=request_class)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows) - 1
