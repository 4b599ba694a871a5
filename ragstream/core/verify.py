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
from ragstream.core.groundedness import _MONTHS, _is_content, split_sentences, tokenize

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


# ----------------------------------------------------------------- answer agreement
# A small model judging "is this claim supported?" is fooled by an answer built from the passage's own
# words with one name swapped. Asking it the question itself is a task it does well: the answer it finds
# in the passage is then compared with the candidate by their names and numbers, in pure code.
EXTRACT_SYSTEM = (
    "You answer questions from a passage. Reply with the shortest answer the passage gives: a name, a "
    "number, a date, yes or no, or a few words. No sentence, no explanation. If the passage does not "
    "answer it, reply: unknown"
)
_UNKNOWN = ("unknown", "not stated", "not mentioned", "i don't know", "cannot be determined", "n/a")
_POLARITY = {"yes": "yes", "no": "no"}


def extract_messages(question: str, passages: Sequence[str]) -> list[dict[str, str]]:
    ctx = "\n\n".join(p[:MAX_PASSAGE_CHARS] for p in passages)
    user = f"Passage:\n{ctx}\n\nQuestion: {question.strip()}\nShortest answer:"
    return [{"role": "system", "content": EXTRACT_SYSTEM}, {"role": "user", "content": user}]


def extract_key(question: str, passages: Sequence[str]) -> str:
    """Cache key of an extraction: the question and the exact passages."""
    h = hashlib.sha256(question.strip().encode())
    for p in passages:
        h.update(b"\x00" + p.encode())
    return h.hexdigest()


def clean_extraction(text: str) -> str | None:
    """The model's short answer, or None when it found none."""
    line = (
        (text or "").strip().splitlines()[0].strip().strip("\"'*").rstrip(".") if (text or "").strip() else ""
    )
    if not line or line.lower().startswith(_UNKNOWN):
        return None
    return line


def key_terms(text: str, question: str) -> set[str]:
    """What a short answer asserts beyond its question: the stems of its numbers, names and months (of
    all its content words when it has none). Words of the question count only when nothing else is left
    ("Which came first, A or B?" is answered by A, which the question names)."""
    toks = tokenize(text)
    asked = {t.stem for t in tokenize(question)}
    critical = {t.stem for t in toks if t.is_number or t.is_capital or t.norm in _MONTHS}
    keys = (critical - asked) or critical
    if not keys:
        content = {t.stem for t in toks if _is_content(t)}
        keys = (content - asked) or content
    return keys


def agrees(candidate: str, extracted: str | None, question: str) -> bool | None:
    """Whether `candidate` says what the passage's own answer says: every key term of the extraction is
    in it (a yes/no extraction: the same polarity, never the other). None when there is nothing to
    compare (no extraction, or one with no key terms)."""
    if not extracted:
        return None
    cand = tokenize(MARKER.sub("", candidate))
    first = extracted.split()[0].lower().strip(",.!")
    if first in _POLARITY:
        words = {t.norm for t in cand}
        other = "no" if first == "yes" else "yes"
        return first in words and other not in words
    keys = key_terms(extracted, question)
    if not keys:
        return None
    return keys <= {t.stem for t in cand}


def novel_terms(candidate: str, passages: Sequence[str], question: str) -> list[str]:
    """Numbers and names of `candidate` found neither in the passages nor in the question: an answer
    that brings its own name or number is not grounded, whatever a model says of it."""
    known: set[str] = set()
    for text in (*passages, question):
        for t in tokenize(text):
            known.update((t.norm, t.stem))
    out = []
    for t in tokenize(MARKER.sub("", candidate)):
        critical = t.is_number or t.norm in _MONTHS or (t.is_capital and t.index > 0)
        if critical and t.norm not in known and t.stem not in known:
            out.append(t.surface)
    return out


# ----------------------------------------------------------------- online verification
# The verifier consumer (consumers/evaluation/verifier.py) scores a sampled share of served answers after
# they went out. Which answers, and what their verdicts add up to, is decided here.


def sampled(key: str, rate: float) -> bool:
    """Whether the answer with this key (its query id) is in the sampled share `rate`: a stable hash, so
    a replay, another replica or a re-run picks the same answers; 0 picks none, 1 all."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return h / 2.0**64 < rate


# How `claims_of` states a short sentence with its question.
_RESTATED = "The answer to '{}' is: "


def claims_novel_terms(claims: Sequence[Claim], question: str = "") -> list[str]:
    """`novel_terms` of each claim against its own passages, sentence by sentence, so the capital that
    starts a later sentence ("However", "Ask") is not taken for a name; a stop word never is one. A bare
    phrase answer (one short claim) keeps its question's statement, whose phrase is then checked whole.
    Claims without passages have none (there is nothing to check them against)."""
    from ragstream.core.groundedness import _STOP  # here: this section is appended to the module

    prefix = _RESTATED.format(question.strip()) if question.strip() else None
    out: list[str] = []
    for c in claims:
        if not c.passages:
            continue
        text = c.text
        if prefix and len(claims) > 1 and text.startswith(prefix):
            text = text[len(prefix) :]
        for t in novel_terms(text, c.passages, question):
            if t.lower() not in _STOP and t not in out:
                out.append(t)
    return out


@dataclass(frozen=True)
class OnlineVerdict:
    outcome: str  # supported | unsupported | unjudged (schemas.verification.VerifyOutcome)
    support: float  # share of the claims judged supported
    claims: int
    unsupported_claims: tuple[str, ...] = ()
    novel_terms: tuple[str, ...] = ()
    unjudged: int = 0


def online_verdict(
    claims: Sequence[Claim], verdicts: Sequence[bool | None], novel: Sequence[str] = ()
) -> OnlineVerdict:
    """The online policy. A name or number of the answer its cited passages lack (`novel_terms`, checked
    before any model call) makes it unsupported whatever a model would say. Else the model's claim
    verdicts: any claim judged unsupported -> unsupported; every claim judged supported -> supported;
    otherwise (a claim left unjudged within the time budget, or no claim at all) -> unjudged. `verdicts`
    may be shorter than `claims` (claims past the per-answer cap were never sent): those are unjudged."""
    n = len(claims)
    if novel:
        return OnlineVerdict("unsupported", 0.0, n, novel_terms=tuple(dict.fromkeys(novel)))
    given = [verdicts[i] if i < len(verdicts) else None for i in range(n)]
    unsupported = tuple(c.text for c, v in zip(claims, given, strict=True) if v is False)
    unjudged = sum(v is None for v in given)
    support = sum(v is True for v in given) / n if n else 0.0
    if unsupported:
        outcome = "unsupported"
    elif n and not unjudged:
        outcome = "supported"
    else:
        outcome = "unjudged"
    return OnlineVerdict(outcome, round(support, 4), n, unsupported, (), unjudged)
