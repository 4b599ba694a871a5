"""Query rewrite: normalization (Unicode NFKC, control characters out, white space folded, length cap) and,
for a follow-up question, salient terms of the conversation's earlier user turns.

A chat client sends "And on weekends?" after "When does the acme cafeteria open?": retrieval on the last
question alone finds nothing about the cafeteria. `with_history` appends the earlier turns' content words
when the last question is short or leans on a pronoun; a self-contained question is left as it is, so
history never drags retrieval away from what was actually asked.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_SPACE = re.compile(r"\s+")
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")
# Words that point back at an earlier turn ("it", "they", "that one") and words without content.
_PRONOUNS = """it its it's this that these those they them their there he she him her his hers one ones
former latter same such"""
_STOPWORDS = """a an the and or but if then so of in on at to for from by with about as into over under is
are was were be been being do does did done have has had can could would should will shall may might must
what which who whom whose when where why how i me my we our you your yes no not also just more most some
any all each tell please explain describe give show know again what's okay ok thanks thank"""
PRONOUNS = frozenset(_PRONOUNS.split())
STOPWORDS = PRONOUNS | frozenset(_STOPWORDS.split())
SHORT_QUESTION_WORDS = 6  # a follow-up of at most this many words gets history terms
MAX_HISTORY_TERMS = 12


def normalize_query(text: str, max_chars: int = 2000) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _CTRL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()[:max_chars]


def confine_history(turns: Sequence[str], max_turns: int = 4, max_chars: int = 1000) -> tuple[str, ...]:
    """The last `max_turns` earlier turns, normalized, newest kept whole first, `max_chars` in all."""
    out: list[str] = []
    left = max_chars
    for turn in reversed(turns[-max_turns:] if max_turns > 0 else ()):
        text = normalize_query(turn, left)
        if not text:
            continue
        out.append(text)
        left -= len(text)
        if left <= 0:
            break
    return tuple(reversed(out))


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def is_follow_up(question: str) -> bool:
    """Short, or leaning on a pronoun: the question needs its conversation to be understood."""
    words = _words(question)
    return len(words) <= SHORT_QUESTION_WORDS or any(w in PRONOUNS for w in words)


def salient_terms(turns: Sequence[str], exclude: set[str], limit: int = MAX_HISTORY_TERMS) -> list[str]:
    """Content words of the turns, newest turn first, each once, without the question's own words."""
    seen = set(exclude)
    out: list[str] = []
    for turn in reversed(turns):
        for w in _words(turn):
            if w in seen or w in STOPWORDS or (len(w) < 3 and not w.isdigit()):
                continue
            seen.add(w)
            out.append(w)
            if len(out) >= limit:
                return out
    return out


def with_history(question: str, history: Sequence[str], max_chars: int = 2000) -> str:
    """The retrieval text: the normalized question, plus salient terms of the earlier user turns when the
    question is a follow-up. Pure; bounded by `max_chars`."""
    text = normalize_query(question, max_chars)
    if not history or not text or not is_follow_up(text):
        return text
    terms = salient_terms(history, set(_words(text)))
    if not terms:
        return text
    return f"{text} {' '.join(terms)}"[:max_chars].strip()
