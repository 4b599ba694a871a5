"""Model-based groundedness, the pure half: an answer split into claims with the passages each cites,
the verification prompt, and the parse of the model's JSON verdicts. The adapter
(`ragstream.adapters.verifier`) sends it; this module does no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ragstream.core.cite import MARKER
from ragstream.core.groundedness import split_sentences

MAX_PASSAGE_CHARS = 1500  # what a small model reads well; the cited sentence is usually near the start

VERDICT_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        "verdicts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"id": {"type": "integer"}, "supported": {"type": "boolean"}},
                "required": ["id", "supported"],
            },
        }
    },
    "required": ["verdicts"],
}

SYSTEM = (
    "You check answers against source passages. A claim is supported only if the passages state it or "
    "it follows directly from them; different wording is fine, but a different name, number, date or "
    "place is not. Reply with JSON only."
)


@dataclass(frozen=True)
class Claim:
    text: str
    passages: tuple[str, ...]

    @property
    def key(self) -> str:
        """Cache key: the claim and the exact passages it is judged against."""
        h = hashlib.sha256(self.text.encode())
        for p in self.passages:
            h.update(b"\x00" + p.encode())
        return h.hexdigest()


def claims_of(
    answer: str, cited: Mapping[str, str], fallback: Sequence[str], question: str | None = None
) -> list[Claim]:
    """One claim per sentence of the answer, judged against the passages its [n] markers cite (else
    against `fallback`, e.g. every passage of the prompt). With `question`, a bare phrase answer
    ("Arthur's Magazine") becomes a claim that says what it answers."""
    out: list[Claim] = []
    for sentence in split_sentences(answer.strip()) or [answer.strip()]:
        ids = MARKER.findall(sentence)
        text = MARKER.sub("", sentence).strip()
        if not text.strip(" .!?"):
            continue
        if question and len(text.split()) <= 6:
            text = f"The answer to '{question.strip()}' is: {text}"
        passages = tuple(dict.fromkeys(cited[i] for i in ids if i in cited)) or tuple(fallback)
        out.append(Claim(text, passages))
    return out


def messages(claims: Sequence[Claim]) -> list[dict[str, str]]:
    """One request for claims that share their passages (the caller batches by passage set)."""
    passages = list(dict.fromkeys(p for c in claims for p in c.passages))
    ctx = "\n\n".join(f"[P{i + 1}] {p[:MAX_PASSAGE_CHARS]}" for i, p in enumerate(passages))
    listed = "\n".join(f"{i + 1}. {c.text}" for i, c in enumerate(claims))
    user = (
        f"Passages:\n{ctx}\n\nClaims:\n{listed}\n\n"
        'For each claim, is it supported by the passages? Answer as {"verdicts": [{"id": 1, '
        '"supported": true}, ...]} with one entry per claim.'
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


_JSON = re.compile(r"\{.*\}", re.S)


def parse_verdicts(text: str, n: int) -> list[bool | None]:
    """The model's verdicts by claim number; None for a claim it did not judge (or unparseable JSON)."""
    out: list[bool | None] = [None] * n
    m = _JSON.search(text or "")
    if not m:
        return out
    try:
        body = json.loads(m.group(0))
    except json.JSONDecodeError:
        return out
    items = body.get("verdicts", []) if isinstance(body, dict) else []
    for pos, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict) or not isinstance(item.get("supported"), bool):
            continue
        idx = item.get("id", pos + 1)
        if isinstance(idx, int) and 1 <= idx <= n:
            out[idx - 1] = item["supported"]
    return out
