"""HaluEval QA as a groundedness benchmark: each row's right and hallucinated answer are judged alone.

Given `knowledge` and `question`, the scorer should call `right_answer` grounded and `hallucinated_answer`
not; accuracy is over both answers of every row (balanced by construction). Rows with an even index form
the calibration half (where the scorer's threshold was chosen), odd ones the held-out half: both are
reported so a tuned figure cannot pass for a general one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragstream.core.groundedness import GroundednessScorer
from ragstream.core.verify import agrees, novel_terms

FIELDS = ("knowledge", "question", "right_answer", "hallucinated_answer")
Progress = Callable[[int, int], None]  # (rows done, rows total)


class HaluEvalFormatError(ValueError):
    """A row that is not a HaluEval QA object; the message names the file and the row."""


@dataclass(frozen=True)
class HaluRow:
    knowledge: str
    question: str
    right_answer: str
    hallucinated_answer: str


def _check(obj: Any, where: str) -> HaluRow:
    if not isinstance(obj, dict):
        raise HaluEvalFormatError(f"{where}: expected a JSON object")
    missing = [k for k in FIELDS if not isinstance(obj.get(k), str)]
    if missing:
        raise HaluEvalFormatError(f"{where}: missing or non-string field(s) {', '.join(missing)}")
    return HaluRow(*(obj[k] for k in FIELDS))


def iter_rows(path: str | Path) -> Iterator[HaluRow]:
    """Rows of a JSONL file, or of a JSON array of objects."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HaluEvalFormatError(f"{p}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        for i, obj in enumerate(data):
            yield _check(obj, f"{p}[{i}]")
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HaluEvalFormatError(f"{p}:{n}: invalid JSON ({exc.msg})") from None
        yield _check(obj, f"{p}:{n}")


def load_rows(path: str | Path, limit: int | None = None) -> list[HaluRow]:
    rows: list[HaluRow] = []
    for row in iter_rows(path):
        if limit is not None and len(rows) >= limit:
            break
        rows.append(row)
    return rows


def _acc(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else 0.0


VERIFIERS = ("lexical", "model", "combined")


def judge_for(mode: str, scorer: GroundednessScorer, model: Any | None) -> Callable[[str, str, str], bool]:
    """(answer, knowledge, question) -> grounded. `model`: the model verifier's claim verdicts.
    `combined`: not grounded when the answer has a name or number the passage lacks (pure code); else
    whether it agrees with the passage's own answer, which the model extracts once per question
    (`ragstream.core.verify.agrees`); else the model's claim verdicts when given in time, the lexical
    scorer's otherwise."""

    def lexical(answer: str, knowledge: str, question: str) -> bool:
        return scorer.score(answer, [knowledge], question).grounded

    if mode == "lexical":
        return lexical
    if model is None:
        raise ValueError(f"verifier {mode!r} needs a model verifier")

    def judged(answer: str, knowledge: str, question: str) -> bool:
        v = model.verify(answer, [knowledge], question)
        if v.judged or mode == "model":
            return bool(v.supported)
        return lexical(answer, knowledge, question)

    def combined(answer: str, knowledge: str, question: str) -> bool:
        if novel_terms(answer, [knowledge], question):
            return False  # a name or number the passage does not have
        verdict = agrees(answer, model.extract(question, [knowledge]), question)
        return judged(answer, knowledge, question) if verdict is None else verdict

    return combined if mode == "combined" else judged


def run_halueval(
    path: str | Path,
    scorer: GroundednessScorer | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
    verifier: str = "lexical",
    model: Any | None = None,
) -> dict[str, Any]:
    """Judge every answer alone; return accuracy overall, per answer kind, per half, and throughput."""
    scorer = scorer or GroundednessScorer()
    judge = judge_for(verifier, scorer, model)
    rows = load_rows(path, limit)
    right: list[bool] = []  # right answer judged grounded
    halluc: list[bool] = []  # hallucinated answer judged not grounded
    start = time.perf_counter()
    for i, row in enumerate(rows):
        right.append(judge(row.right_answer, row.knowledge, row.question))
        halluc.append(not judge(row.hallucinated_answer, row.knowledge, row.question))
        if progress is not None:
            progress(i + 1, len(rows))
    seconds = time.perf_counter() - start
    answers = 2 * len(rows)
    both = right + halluc
    return {
        "file": str(path),
        "rows": len(rows),
        "answers": answers,
        "accuracy": _acc(both),
        "right_accuracy": _acc(right),
        "hallucinated_accuracy": _acc(halluc),
        "calibration_accuracy": _acc(right[0::2] + halluc[0::2]),  # even rows
        "heldout_accuracy": _acc(right[1::2] + halluc[1::2]),  # odd rows
        "threshold": scorer.threshold,
        "embedder": scorer.embedder is not None,
        "seconds": round(seconds, 3),
        "answers_per_s": round(answers / seconds, 2) if seconds > 0 else 0.0,
        "verifier": verifier,
        "seconds_per_answer": round(seconds / answers, 3) if answers else 0.0,
    }
