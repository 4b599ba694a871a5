"""The injection defense measured without a model: what the prompt keeps and what it removes.

For each case set: `payload_visible` (cases whose planted payload still appears in the assembled context,
marked or not; the model may still ignore it) and `facts_lost` (cases where an `expect` fact no longer
reaches the prompt: the defense removed honest content). For ordinary documents (SciFact abstracts,
HotpotQA passages from HaluEval, Debian's FAQ and reference manual when installed): how many documents
lose text to a removal or get a sentence marked. Pure and fast; the model-based run is `evals.injection.run`.

    python -m evals.injection.static [--cases FILE ...] [--datasets DIR]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from evals.injection.run import CASES, Case, load_cases, normalize
from ragstream.core.prompt import PLANTED, REMOVED, assemble, escape_text

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
_TAG = re.compile(r"<[^>]+>")


def context_of(case: Case) -> str:
    """The assembled context as the model reads it (question fence and after left out), normalized."""
    user = assemble(case.question, case.to_passages(), 100_000).messages[1]["content"]
    return normalize(user.split("<question>")[0])


def case_report(cases: Iterable[Case]) -> dict[str, Any]:
    visible, lost = [], []
    for c in cases:
        body = context_of(c)
        if any(re.search(rx, body, re.I | re.S) for rx in c.steered):
            visible.append(c.id)
        if any(not any(normalize(a) in body for a in alts) for alts in c.expect):
            lost.append(c.id)
    return {"payload_visible": len(visible), "facts_lost": lost, "visible_ids": visible}


def benign_report(texts: Iterable[str]) -> dict[str, Any]:
    docs = removed = marked = 0
    examples: list[str] = []
    for t in texts:
        out = escape_text(t, remove_planted=True)
        docs += 1
        removed += REMOVED in out
        marked += PLANTED in out
        if REMOVED in out and len(examples) < 5:
            examples.append(out[:200])
    return {"docs": docs, "with_removal": removed, "with_mark": marked, "removal_examples": examples}


def _jsonl(path: Path, key: str) -> Iterator[str]:
    if path.exists():
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)[key]


def debian_paragraphs() -> Iterator[str]:
    """Paragraphs of Debian's FAQ and reference manual (HTML, tags stripped), where installed."""
    try:
        listed = subprocess.run(
            ["dpkg", "-L", "debian-faq", "debian-reference-en"], capture_output=True, text=True, check=False
        ).stdout.split()
    except OSError:
        return
    for name in listed:
        if name.endswith(".html") and Path(name).is_file():
            text = _TAG.sub(" ", Path(name).read_text(encoding="utf-8", errors="ignore"))
            for para in re.split(r"\n\s*\n", text):
                if len(para.split()) > 5:
                    yield " ".join(para.split())


def report(case_files: Iterable[Path], datasets: Path = DATASETS) -> dict[str, Any]:
    out: dict[str, Any] = {f.stem: case_report(load_cases(f)) for f in case_files}
    out["scifact"] = benign_report(_jsonl(datasets / "scifact" / "corpus.jsonl", "text"))
    out["halueval_knowledge"] = benign_report(_jsonl(datasets / "halueval-qa" / "dev.jsonl", "knowledge"))
    out["debian_paragraphs"] = benign_report(debian_paragraphs())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evals.injection.static", description=__doc__.split("\n")[0])
    here = CASES.parent
    default = [CASES, here / "heldout.yaml", here / "heldout2.yaml"]
    ap.add_argument("--cases", type=Path, nargs="*", default=[p for p in default if p.exists()])
    ap.add_argument("--datasets", type=Path, default=DATASETS)
    args = ap.parse_args(argv)
    print(json.dumps(report(args.cases, args.datasets), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
