"""The hard groundedness set, built from HaluEval QA dev: the right answer restated in new words by the
configured model (a lexical scorer no longer finds its words in the passage), the wrong answer the same
restatement with its name or number swapped for another from the same passage (every word of it is in
the passage). Rows keep HaluEval's fields, so `eval halueval` scores the set as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from evals.halueval import HaluRow, iter_rows
from ragstream.settings import LLMSettings

_NUMBER = re.compile(r"\b\d[\d,.]*\d\b|\b\d\b")
# A capitalized name: capitalized words, joined by short lowercase connectors ("Bank of England").
_NAME = re.compile(r"\b[A-Z][\w'-]*(?:\s+(?:of|the|de|da|von|van|and|&)?\s*[A-Z][\w'-]*)*")
_COMMON = set(
    [
        "The",
        "A",
        "An",
        "In",
        "On",
        "At",
        "By",
        "For",
        "From",
        "It",
        "He",
        "She",
        "They",
        "This",
        "That",
        "His",
        "Her",
        "Its",
        "Later",
        "After",
        "Before",
        "When",
        "During",
        "However",
        "Also",
        "Although",
        "While",
        "Since",
        "Despite",
    ]
)
Progress = Callable[[int, int], None]


def _names(text: str) -> list[str]:
    """Capitalized names, without a one-word capital that only ever starts a sentence ("Before")."""
    out = []
    for m in _NAME.finditer(text):
        name = m.group(0).strip()
        if name.split()[0] in _COMMON:
            name = " ".join(name.split()[1:])
        if len(name) <= 2:
            continue
        if " " not in name and not re.search(r"[^.!?\s]\s+" + re.escape(name) + r"\b", text):
            continue
        out.append(name)
    return list(dict.fromkeys(out))


def swap(answer: str, knowledge: str, question: str) -> str | None:
    """`answer` with its first number or name replaced by another number or name of the passage that the
    answer and the question do not mention; None when there is none to swap."""
    for pattern in (_NUMBER, _NAME):
        found = [m.group(0) for m in pattern.finditer(answer)]
        if pattern is _NAME:
            found = [n for n in _names(answer) if n in knowledge and n not in question]
        if not found:
            continue
        target = found[0]
        pool = _NUMBER.findall(knowledge) if pattern is _NUMBER else _names(knowledge)
        words = set(answer.lower().split()) | set(question.lower().split())
        for cand in pool:
            same_kind = pattern is _NAME or len(cand) == len(target)  # a year for a year
            if cand != target and same_kind and not set(cand.lower().split()) & words:
                return answer.replace(target, cand, 1)
    return None


def restate(client: httpx.Client, cfg: LLMSettings, question: str, answer: str) -> str | None:
    body = {
        "model": cfg.model,
        "messages": [
            {
                "role": "user",
                "content": (
                    f"Question: {question}\nAnswer: {answer}\n\nRewrite the answer as one complete sentence "
                    "in different words from the question's. Keep every name, number and fact exactly; add "
                    "no new facts. Reply with the sentence only."
                ),
            }
        ],
        "max_tokens": 60,
        "temperature": 0.0,
    }
    try:
        resp = client.post("/chat/completions", json=body)
        resp.raise_for_status()
        text = str(resp.json()["choices"][0]["message"]["content"]).strip().strip('"')
    except (httpx.HTTPError, KeyError, IndexError, ValueError):
        return None
    return text.splitlines()[0].strip() if text else None


def build(
    dev: Path, cfg: LLMSettings, *, start: int, count: int, progress: Progress | None = None
) -> Iterator[HaluRow]:
    """Rows from `start` on (apart from the rows `eval halueval` samples first) until `count` are built."""
    made = 0
    with httpx.Client(base_url=cfg.base_url.rstrip("/"), timeout=cfg.timeout_s) as client:
        for i, row in enumerate(iter_rows(dev)):
            if i < start or row.right_answer.strip().lower() in ("yes", "no"):
                continue
            if swap(row.right_answer, row.knowledge, row.question) is None:
                continue  # nothing of its kind to swap: the row could only be made hard with new words
            para = restate(client, cfg, row.question, row.right_answer)
            wrong = swap(para, row.knowledge, row.question) if para else None
            if not para or not wrong:
                continue
            made += 1
            yield HaluRow(row.knowledge, row.question, para, wrong)
            if progress:
                progress(made, count)
            if made >= count:
                return


def write(rows: Iterator[HaluRow], out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r.__dict__, ensure_ascii=False) + "\n")
            fh.flush()  # a long build keeps what it made
            n += 1
    return n
