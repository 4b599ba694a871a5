"""Groundedness: is every statement of an answer supported by the passages it was given? No API, no network.

Method (evals/GROUNDEDNESS.md has the full description and the measured figures):
  1. Split the answer into statements (sentences, semicolon clauses, comma-delimited asides).
  2. Type each statement's content tokens: numbers, dates and proper names are *critical*; other content
     words are *soft*; a few generic relation words are *light*. Words the question already contains
     prove little (restating the question is no support), so they weigh less.
  3. Match tokens against the passages after accent folding, number normalization, light stemming,
     irregular verb forms and a small table of general English synonyms; optionally an injected
     embedder vouches for soft words whose embedding is close to a passage word's (paraphrase).
  4. A critical token missing from the passages, a name not found as written, a negation the aligned
     passage sentence does not share, a dropped rank ("longest" for "second-longest"), or facts taken
     from sentences about different subjects (locality) reject the statement.
  5. A bare yes/no cannot be checked word by word: it is accepted when the passages cover the names the
     question asks about.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np

# Statement score needed for support; chosen on the calibration half of HaluEval QA (GROUNDEDNESS.md).
DEFAULT_THRESHOLD = 0.88


class SentenceEmbedder(Protocol):
    """Texts to L2-normalized rows (ragstream.adapters.embedder.SentenceTransformerEmbedder fits)."""

    def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class StatementResult:
    text: str
    supported: bool
    score: float  # in [0, 1]
    passage_index: int | None  # the passage carrying most of the statement; None when nothing matched
    unsupported: tuple[str, ...] = ()  # claim words the passages do not carry
    reason: str = ""


@dataclass(frozen=True)
class GroundednessResult:
    score: float  # in [0, 1]: mean statement score
    grounded: bool  # every statement supported
    threshold: float
    statements: tuple[StatementResult, ...] = field(default_factory=tuple)

    @property
    def supported_share(self) -> float:
        """Share of the answer's statements that the passages support."""
        if not self.statements:
            return 0.0
        return sum(s.supported for s in self.statements) / len(self.statements)


# ---------------------------------------------------------------- vocabulary

_STOP = frozenset(
    {
        "a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with",
        "from", "into", "onto", "over", "under", "about", "as", "than", "then", "that", "this", "these",
        "those", "there", "here", "which", "who", "whom", "whose", "what", "when", "where", "why", "how",
        "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did", "done", "has", "have",
        "had", "having", "it", "its", "he", "him", "his", "she", "her", "hers", "they", "them", "their",
        "theirs", "we", "us", "our", "you", "your", "i", "me", "my", "mine", "so", "such", "also", "very",
        "too", "just", "only", "both", "either", "each", "any", "all", "some", "most", "more", "many",
        "much", "few", "other", "another", "same", "own", "can", "could", "will", "would", "shall",
        "should", "may", "might", "must", "upon", "via", "per", "while", "during", "after", "before",
        "since", "until", "between", "among", "against", "within", "through", "throughout", "across",
        "along", "around", "toward", "towards", "up", "down", "out", "off", "again", "further", "whether",
        "because", "though", "although", "yes", "no", "not", "nor", "never", "none", "n't",
    }
)  # fmt: skip
# Generic relation words: paraphrases swap them freely, so their absence is weak evidence.
_LIGHT = frozenset(
    {
        "known", "called", "named", "name", "located", "based", "situated", "find", "made", "make",
        "become", "considered", "regarded", "refer", "part", "member", "type", "kind", "form", "currently",
        "also", "well", "stand", "stands", "lie", "lies", "sit", "sits",
    }
)  # fmt: skip
_NEGATION = frozenset({"not", "no", "never", "n't", "none", "neither", "nor", "without", "cannot", "nobody"})
_YES_NO = frozenset({"yes", "no"})
_WH_START = re.compile(r"^\W*(who|whom|whose|what|which|when|where|why|how|name)\b", re.I)
_NUM_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13",
    "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18",
    "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60",
    "seventy": "70", "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000",
    "million": "1000000", "billion": "1000000000", "first": "1", "second": "2", "third": "3",
    "fourth": "4", "fifth": "5", "sixth": "6", "seventh": "7", "eighth": "8", "ninth": "9", "tenth": "10",
    "twice": "2", "thrice": "3",
}  # fmt: skip
_MONTHS = frozenset(
    {
        "january", "february", "march", "april", "june", "july", "august", "september", "october",
        "november", "december",
    }
)  # fmt: skip
_IRREGULAR = {
    "won": "win", "wrote": "write", "written": "write", "began": "begin", "begun": "begin", "made": "make",
    "led": "lead", "sold": "sell", "bought": "buy", "held": "hold", "ran": "run", "grew": "grow",
    "grown": "grow", "took": "take", "taken": "take", "gave": "give", "given": "give", "became": "become",
    "came": "come", "met": "meet", "built": "build", "taught": "teach", "fought": "fight", "told": "tell",
    "sang": "sing", "sung": "sing", "drew": "draw", "drawn": "draw", "chose": "choose", "chosen": "choose",
    "spoke": "speak", "spoken": "speak", "flew": "fly", "flown": "fly", "knew": "know", "known": "know",
    "saw": "see", "seen": "see", "went": "go", "gone": "go", "lost": "lose", "fell": "fall",
    "fallen": "fall", "died": "die", "dies": "die", "dying": "die", "brought": "bring", "kept": "keep",
    "paid": "pay", "sent": "send", "spent": "spend", "stood": "stand", "struck": "strike", "wore": "wear",
    "worn": "wear", "shot": "shoot", "thought": "think", "sought": "seek", "caught": "catch",
    "children": "child", "men": "man", "women": "woman", "people": "person", "feet": "foot",
}  # fmt: skip
# General English near-synonyms a faithful paraphrase uses (not tuned to any data set).
_SYNONYM_GROUPS = (
    "found establish create start launch incorporate",
    "begin start commence",
    "company firm business corporation enterprise",
    "die death decease",
    "film movie",
    "write author",
    "singer vocalist",
    "locate base situate headquarter",
    "large big",
    "largest biggest",
    "small little",
    "famous renowned noted notable",
    "award prize honor honour",
    "receive earn",
    "marry wed",
    "buy purchase acquire",
    "show series programme program",
    "nation country",
    "job occupation profession career",
    "play star appear feature portray",
    "song single track",
    "lead head",
    "elder older",
    "near nearby close",
    "direct helm",
    "home house",
    "create design develop",
    "build construct erect",
    "win receive earn award",
    "own belong",
    "start open",
)
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th|s)?|[^\W\d_]+(?:'[^\W\d_]+)*|n't", re.UNICODE)
_ORDINAL = re.compile(r"^(\d+)(?:st|nd|rd|th|s)$")


def fold(text: str) -> str:
    """Accents stripped, curly quotes and dashes straightened: 'Renée' and 'Renee' must match."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return text.translate(str.maketrans({"\u2019": "'", "\u2018": "'", "\u2013": "-", "\u2014": "-"}))


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix stripper: enough to meet 'defeating'/'defeated', 'studies'/'study'."""
    w = _IRREGULAR.get(word, word)
    if len(w) <= 3:
        return w
    for suf, rep, min_len in (
        ("ies", "y", 5), ("sses", "ss", 5), ("ness", "", 7), ("ments", "ment", 7), ("ings", "", 6),
        ("ing", "", 6), ("edly", "", 7), ("ied", "y", 5), ("ed", "", 5), ("ly", "", 6), ("es", "", 5),
        ("s", "", 4),
    ):  # fmt: skip
        if w.endswith(suf) and len(w) >= min_len and not (suf == "s" and w.endswith(("ss", "us", "is"))):
            w = w[: len(w) - len(suf)] + rep
            if suf in {"ed", "ing", "ings"} and len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":
                w = w[:-1]  # 'starred'/'stars', 'stopping'/'stop'
            break
    if w.endswith("e") and len(w) > 4:
        w = w[:-1]  # 'create'/'created'/'creating' share 'creat'
    return w


def _synonym_index() -> dict[str, frozenset[int]]:
    idx: dict[str, set[int]] = {}
    for gid, group in enumerate(_SYNONYM_GROUPS):
        for word in group.split():
            idx.setdefault(stem(word), set()).add(gid)
    return {k: frozenset(v) for k, v in idx.items()}


_SYNONYMS = _synonym_index()


@dataclass(frozen=True)
class Token:
    surface: str  # as written (case kept)
    norm: str  # folded, lowercased; numbers as digits
    stem: str
    is_number: bool
    is_capital: bool
    index: int  # position among the text's word tokens


def _norm_word(low: str) -> str:
    if low.endswith("'s"):
        low = low[:-2]
    if "'" in low and low != "n't":
        head, _, rest = low.partition("'")
        # l'Etranger -> etranger, O'Brien -> obrien
        return rest.replace("'", "") if len(head) == 1 and head != "o" else (head + rest).replace("'", "")
    return low


def tokenize(text: str) -> list[Token]:
    out: list[Token] = []
    for m in _TOKEN.finditer(fold(text)):
        raw = m.group(0)
        low = raw.lower()
        num: str | None = None
        if raw[0].isdigit():
            digits = low.replace(",", "")
            om = _ORDINAL.match(digits)
            num = (om.group(1) if om else digits).lstrip("0") or "0"
        elif low in _NUM_WORDS:
            num = _NUM_WORDS[low]
        if low.endswith("n't") and low != "n't":
            low = low[:-3]
        norm = num if num is not None else _norm_word(low)
        if not norm:
            continue
        out.append(
            Token(
                raw,
                norm,
                norm if num is not None else stem(norm),
                num is not None,
                raw[0].isupper(),
                len(out),
            )
        )
        if raw.lower().endswith("n't") and raw.lower() != "n't":
            out.append(Token("n't", "n't", "n't", False, False, len(out)))
    return out


# Sentence ends: '.', '!' or '?' before a capital, digit or quote, unless the dot closes an initial or a
# common abbreviation. Scraped passages often glue sentences ("1846).First"), so no space is required.
_ABBREV = re.compile(
    r"(?:\b[A-Z]|\bSt|\bMr|\bMrs|\bMs|\bDr|\bJr|\bSr|\bInc|\bLtd|\bCo|\bCorp|\bvs|\bNo|\bVol|\bU\.S|\bU\.K|"
    r"\bal|\betc|\bapprox|\bMt|\bFt|\bGen|\bGov|\bSen|\bRep|\bRev|\bProf)\.$"
)
_SENT_END = re.compile(r"[.!?](?=[\"')\]]?\s*[A-Z0-9\"'(])|[.!?]\s*$|;\s+")


def split_sentences(text: str) -> list[str]:
    parts: list[str] = []
    start = 0
    for m in _SENT_END.finditer(text):
        if text[m.start()] == "." and _ABBREV.search(text[start : m.start() + 1]):
            continue
        parts.append(text[start : m.end()])
        start = m.end()
    parts.append(text[start:])
    return [p for p in (p.strip(" ;\n\t") for p in parts) if any(c.isalnum() for c in p)]


# ", which owns Longines," / ", who co-starred with X," / ", a Swiss watchmaker founded in 1983": a fact of
# its own about the words just before the comma.
_ASIDE = re.compile(r",\s+(?P<rel>which|who|an?)\s+(?P<body>[^,;]+?)(?:,\s*|\s*(?=[.!?]?\s*$))")
_HEAD = re.compile(r"((?:[A-Z][\w'.-]*\s+)*[A-Z][\w'.-]*|\w+)\s*$")


def _split_asides(sentence: str) -> list[str]:
    out: list[str] = []
    main = sentence
    for m in list(_ASIDE.finditer(sentence))[::-1]:
        head = _HEAD.search(sentence[: m.start()])
        if head is None or len(m.group("body").split()) < 2:
            continue
        link = "is" if m.group("rel").lower() in {"a", "an"} else ""
        rel = m.group("rel") if link else ""
        out.append(" ".join(w for w in (head.group(1), link, rel, m.group("body")) if w))
        tail = sentence[m.end() :]
        main = main[: m.start()] + (" " if tail.strip(" .!?") else "") + main[m.end() :]
    return [main.strip(), *out[::-1]]


_CITATION = re.compile(r"\s*\[\d{1,3}(?:\s*[,;]\s*\d{1,3})*\]")


def split_statements(answer: str) -> list[str]:
    """Sentences, semicolon clauses and comma-delimited asides; a bare phrase answer is one statement.

    Citation markers ("[2]") are dropped first: they are references, not claims."""
    text = _CITATION.sub("", answer).strip()
    return [c for s in split_sentences(text) for c in _split_asides(s) if c.strip(" .!?")]


def _is_content(t: Token) -> bool:
    # short lowercase fragments ("co" of "co-starred") carry no claim; short names ("G", "UK") do
    return t.is_number or (t.norm not in _STOP and (len(t.norm) > 2 or t.is_capital))


def _is_critical(t: Token) -> bool:
    # a capital at a statement's start may only be grammar ("The", "Founded"); inside it marks a name
    return t.is_number or t.norm in _MONTHS or (t.is_capital and t.index > 0)


# ---------------------------------------------------------------- passages


@dataclass
class _Passage:
    tokens: list[Token]
    norms: set[str]
    stems: set[str]
    positions: dict[str, list[int]]  # stem -> token positions, for phrase checks
    sentences: list[set[str]]  # stems per sentence, for locality
    sentence_tokens: list[list[Token]]
    offsets: list[int]  # passage number of each sentence (windows never cross passages)
    continues: list[bool]  # the sentence opens with an anaphor ("It", "She", "The company") of the one before


def _index_passages(texts: Sequence[str]) -> _Passage:
    tokens: list[Token] = []
    sentence_tokens: list[list[Token]] = []
    offsets: list[int] = []
    for n, text in enumerate(texts):
        for s in split_sentences(text) or [text]:
            st = tokenize(s)
            sentence_tokens.append(st)
            offsets.append(n)
            tokens.extend(st)
        tokens.append(Token("", "\x00", "\x00", False, False, -1))  # no phrase spans two passages
    positions: dict[str, list[int]] = {}
    for i, t in enumerate(tokens):
        positions.setdefault(t.stem, []).append(i)
    return _Passage(
        tokens=tokens,
        norms={t.norm for t in tokens},
        stems=set(positions),
        positions=positions,
        sentences=[{t.stem for t in s} for s in sentence_tokens],
        sentence_tokens=sentence_tokens,
        offsets=offsets,
        continues=[
            i > 0 and offsets[i] == offsets[i - 1] and _anaphoric(st) for i, st in enumerate(sentence_tokens)
        ],
    )


_PRONOUNS = frozenset({"he", "she", "it", "they", "his", "her", "its", "their"})
_ANAPHOR_SPAN = 12  # tokens: a pronoun this early is the sentence's subject or close to it


def _anaphoric(sent: list[Token]) -> bool:
    """Refers back with a pronoun early on, or opens with a bare definite description ("The company"):
    it goes on about the previous sentence's subject."""
    if not sent:
        return False
    if any(t.norm in _PRONOUNS for t in sent[:_ANAPHOR_SPAN]):
        return True
    return sent[0].norm in {"the", "this", "these"} and len(sent) > 1 and not sent[1].is_capital


def _prefix_match(stem_: str, stems: set[str]) -> str | None:
    """'America'/'American', 'Bavaria'/'Bavarian': a long shared prefix covering most of both words."""
    if len(stem_) < 5:
        return None
    for s in stems:
        if len(s) >= 5 and s[0] == stem_[0]:
            short, long_ = (s, stem_) if len(s) <= len(stem_) else (stem_, s)
            if long_.startswith(short) and len(short) >= 0.75 * len(long_):
                return s
    return None


def _match(t: Token, p: _Passage) -> tuple[float, str | None]:
    """Support of one token and the passage stem that carries it: exact 1.0, synonym or long prefix 0.9."""
    if t.norm in p.norms or t.stem in p.stems:
        return 1.0, t.stem
    if t.is_number:
        return 0.0, None  # numbers match exactly or not at all
    groups = _SYNONYMS.get(t.stem)
    if groups:
        for s in p.stems:
            if groups & _SYNONYMS.get(s, frozenset()):
                return 0.9, s
    pref = _prefix_match(t.stem, p.stems)
    if pref is not None:
        return 0.9, pref
    return 0.0, None


def _phrase_in(run: list[Token], p: _Passage, max_gap: int = 3) -> bool:
    """Names written together appear in order within a few tokens (room for middle names)."""
    for a, b in itertools.pairwise(run):
        pa, pb = p.positions.get(a.stem, []), p.positions.get(b.stem, [])
        if not any(0 < j - i <= max_gap for i in pa for j in pb):
            return False
    return True


def _capital_runs(toks: Sequence[Token]) -> list[list[Token]]:
    runs: list[list[Token]] = []
    cur: list[Token] = []
    for t in [*toks, Token("", "", "", False, False, -1)]:
        if t.is_capital and not t.is_number and t.norm not in _STOP:
            cur.append(t)
            continue
        if len(cur) >= 2:
            runs.append(cur)
        cur = []
    return runs


_ORDINAL_WORDS = frozenset(
    {"second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"}
)


def _superlative(t: Token) -> bool:
    return t.norm in {"most", "least"} or (t.norm.endswith("est") and len(t.norm) > 4)


def _dropped_rank(stmt: Sequence[Token], p: _Passage) -> str | None:
    """'the longest' where the passages only ever say 'the second-longest': the rank was dropped."""
    for i, t in enumerate(stmt):
        if not _superlative(t) or (i > 0 and stmt[i - 1].surface.lower() in _ORDINAL_WORDS):
            continue
        spots = p.positions.get(t.stem, [])
        ranked = [j for j in spots if j > 0 and p.tokens[j - 1].surface.lower() in _ORDINAL_WORDS]
        if ranked and len(ranked) == len(spots):
            j = ranked[0]
            return f"{p.tokens[j - 1].surface}-{p.tokens[j].surface}"
    return None


def _negations(toks: Sequence[Token]) -> list[int]:
    # "No. 7" is a number sign, not a negation
    return [
        i
        for i, t in enumerate(toks)
        if t.norm in _NEGATION and not (t.norm == "no" and i + 1 < len(toks) and toks[i + 1].is_number)
    ]


# ---------------------------------------------------------------- scoring


@dataclass(frozen=True)
class _Question:
    stems: frozenset[str]
    names: tuple[Token, ...]  # the names and numbers the question asks about
    asks_wh: bool  # "Who ...?": a bare yes/no does not answer it


def _read_question(question: str | None) -> _Question:
    if not question:
        return _Question(frozenset(), (), False)
    toks = tokenize(question)
    return _Question(
        stems=frozenset(t.stem for t in toks if _is_content(t)),
        names=tuple(t for t in toks if _is_content(t) and _is_critical(t)),
        asks_wh=bool(_WH_START.match(fold(question))),
    )


@dataclass
class _Claim:
    """Per-token evidence of one statement."""

    tokens: list[Token]
    weights: list[float]
    support: list[float]
    carriers: list[str | None]  # passage stems matched

    def score(self) -> float:
        total = sum(self.weights)
        return sum(w * s for w, s in zip(self.weights, self.support, strict=True)) / total if total else 0.0


class GroundednessScorer:
    """Statement-level support of an answer by passages; deterministic and CPU-only.

    `embedder` (optional) vouches for soft words no passage word matches when their embedding is close to a
    passage word's (`word_similarity`); without it the scorer is purely lexical and fast. The keyword
    weights are the method's knobs; the defaults are the ones GROUNDEDNESS.md measures.
    """

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        embedder: SentenceEmbedder | None = None,
        *,
        critical_weight: float = 2.0,
        soft_weight: float = 1.0,
        light_weight: float = 0.3,
        question_weight: float = 0.25,
        missing_penalty: float = 1.0,
        locality_window: int = 1,
        locality_weight: float = 1.0,
        locality_question_weight: float = 0.5,
        polarity_cover: float = 0.5,
        word_similarity: float = 0.7,
    ) -> None:
        self.threshold = threshold
        self.embedder = embedder
        self.critical_weight = critical_weight
        self.soft_weight = soft_weight
        self.light_weight = light_weight
        self.question_weight = question_weight  # weight of a question word that the passages hold
        self.missing_penalty = missing_penalty  # < 1: extra factor per new soft word missing
        self.locality_window = locality_window  # sentences per stretch, before anaphoric continuations
        self.locality_weight = locality_weight
        self.locality_question_weight = locality_question_weight
        self.polarity_cover = polarity_cover  # share of asked-about names a bare yes/no needs
        self.word_similarity = word_similarity
        self._vectors: dict[str, np.ndarray] = {}  # word -> embedding, across calls

    def score(self, answer: str, passages: list[str], question: str | None = None) -> GroundednessResult:
        texts = [p for p in passages if p and p.strip()]
        statements = split_statements(answer)
        if not texts or not statements:
            why = "no passages" if not texts else "empty answer"
            res = tuple(StatementResult(s, False, 0.0, None, reason=why) for s in statements)
            return GroundednessResult(0.0, False, self.threshold, res)
        index = _index_passages(texts)
        q = _read_question(question)
        results = tuple(self._statement(s, index, q) for s in statements)
        overall = sum(r.score for r in results) / len(results)
        return GroundednessResult(
            round(overall, 4), all(r.supported for r in results), self.threshold, results
        )

    # one statement --------------------------------------------------------------------------------

    def _statement(self, text: str, p: _Passage, q: _Question) -> StatementResult:
        toks = tokenize(text)
        content = [t for t in toks if _is_content(t)]
        if not content and {t.norm for t in toks} & _YES_NO:
            return self._polarity(text, p, q)
        if not content:
            content = [t for t in toks if len(t.norm) > 1 or t.is_capital]  # "For Against", "D.O."
        if not content:
            return StatementResult(text, False, 0.0, None, reason="no content")
        novel = [t for t in content if t.stem not in q.stems]
        if q.stems and not novel and len({t.stem for t in content}) >= 0.6 * len(q.stems):
            return self._result(text, 0.0, p, content, [], "restates the question; no new claim")

        claim = self._weigh(content, p, q, bool(novel))
        score = claim.score()
        missing = [t for t, s in zip(claim.tokens, claim.support, strict=True) if s == 0.0]
        reason = ""
        soft_missing = [t for t in missing if t.norm not in _LIGHT and t.stem not in q.stems]
        if any(_is_critical(t) for t in missing):
            score, reason = min(score, 0.3), "number, date or name not in the passages"
        elif soft_missing:
            # every new content word is a claim; a strict scorer (missing_penalty < 1) charges extra
            score *= self.missing_penalty ** len(soft_missing)
            reason = "words not in the passages: " + ", ".join(t.surface for t in soft_missing)
        for run in _capital_runs(toks):
            if all(_match(t, p)[0] > 0 for t in run) and not _phrase_in(run, p):
                score = min(score, 0.4)
                reason = f"name {' '.join(t.surface for t in run)!r} not found as written"
        locality = self._locality(claim, p, q)
        if locality < 1.0:
            score *= (1 - self.locality_weight) + self.locality_weight * locality
            reason = reason or f"facts spread over unrelated sentences (locality {locality:.2f})"
        if self._negation_differs(toks, content, p):
            score, reason = min(score, 0.2), "negation differs from the passage"
        dropped = _dropped_rank(toks, p)
        if dropped:
            score, reason = min(score, 0.3), f"the passages say {dropped!r}"
        return self._result(text, score, p, content, [t.surface for t in missing], reason)

    def _weigh(self, content: list[Token], p: _Passage, q: _Question, has_novel: bool) -> _Claim:
        weights: list[float] = []
        support: list[float] = []
        carriers: list[str | None] = []
        for t in content:
            if _is_critical(t):
                w = self.critical_weight
            elif t.norm in _LIGHT:
                w = self.light_weight
            else:
                w = self.soft_weight
            s, carrier = _match(t, p)
            if s == 0.0 and self.embedder is not None and not _is_critical(t):
                s, carrier = self._similar_word(t, p)
            if has_novel and t.stem in q.stems and s > 0:
                w *= self.question_weight  # the question's own words prove little, but must be there
            weights.append(w)
            support.append(s)
            carriers.append(carrier)
        return _Claim(content, weights, support, carriers)

    def _locality(self, claim: _Claim, p: _Passage, q: _Question) -> float:
        """Share of the matched claim words that one stretch of text about one subject holds together.

        A stretch is `locality_window` consecutive sentences plus any that continue them anaphorically;
        a statement stitched from sentences about different subjects scores low.
        """
        weight: dict[str, float] = {}
        for c, t in zip(claim.carriers, claim.tokens, strict=True):
            if c and t.norm not in _LIGHT:
                w = self.locality_question_weight if t.stem in q.stems else 1.0
                weight[c] = max(weight.get(c, 0.0), w)
        found = {c for c, w in weight.items() if w > 0}
        if len(found) <= 2:
            return 1.0
        total = sum(weight.values())
        best = 0.0
        n = len(p.sentences)
        for i in range(n):
            window = set(p.sentences[i])
            j = i + 1
            while j < n and p.offsets[j] == p.offsets[i] and (j - i < self.locality_window or p.continues[j]):
                window |= p.sentences[j]
                j += 1
            best = max(best, sum(weight[c] for c in found & window))
        return best / total

    def _negation_differs(self, toks: list[Token], content: list[Token], p: _Passage) -> bool:
        """A negated claim needs a negated source sentence; a plain clause must not drop a nearby 'not'."""
        stems = {t.stem for t in content}
        mine = len(_negations(toks))
        best, best_n = None, 0 if mine else 1  # a negated claim is checked even when it is short
        for sent in p.sentence_tokens:
            n = len(stems & {t.stem for t in sent})
            if n > best_n:
                best, best_n = sent, n
        if best is None:
            return False
        if not mine and len(content) < 4:
            return False  # a bare name or phrase asserts no predicate to negate
        # negations of the source sentence that bear on words of this statement
        theirs = sum(
            any(t.stem in stems for t in best[max(0, i - 3) : i + 4] if t.norm not in _NEGATION)
            for i in _negations(best)
        )
        return mine != theirs

    def _polarity(self, text: str, p: _Passage, q: _Question) -> StatementResult:
        """A bare yes/no: a 'no' is right exactly when the asked property is absent, so only the names asked
        about must be in the passages."""
        if q.asks_wh:
            return StatementResult(text, False, 0.0, None, reason="a yes/no does not answer this question")
        if not q.names:
            return StatementResult(text, False, 0.0, None, reason="yes/no without a question to check")
        cover = sum(_match(t, p)[0] > 0 for t in q.names) / len(q.names)
        if cover < self.polarity_cover:
            return self._result(
                text, 0.0, p, list(q.names), [], "yes/no: the passages miss what was asked about"
            )
        return self._result(text, 1.0, p, list(q.names), [], "yes/no: the passages cover the question")

    def _similar_word(self, t: Token, p: _Passage) -> tuple[float, str | None]:
        """Embedder-vouched synonym: the passage content word closest in meaning, if close enough."""
        words = sorted({w.norm for w in p.tokens if _is_content(w) and not w.is_number and w.index >= 0})
        if not words:
            return 0.0, None
        vecs = self._word_vectors([t.norm, *words])
        sims = vecs[1:] @ vecs[0]
        i = int(np.argmax(sims))
        if float(sims[i]) < self.word_similarity:
            return 0.0, None
        return 0.9, stem(words[i])

    def _word_vectors(self, words: list[str]) -> np.ndarray:
        assert self.embedder is not None
        todo = [w for w in dict.fromkeys(words) if w not in self._vectors]
        if todo:
            if len(self._vectors) > 200_000:
                self._vectors.clear()  # bounded memory on long runs
            self._vectors.update(zip(todo, self.embedder.embed(todo), strict=True))
        return np.stack([self._vectors[w] for w in words])

    def _result(
        self, text: str, score: float, p: _Passage, content: list[Token], missing: list[str], reason: str
    ) -> StatementResult:
        supported = score >= self.threshold
        return StatementResult(
            text=text,
            supported=supported,
            score=round(max(0.0, min(1.0, score)), 4),
            passage_index=_best_passage(content, p),
            unsupported=tuple(missing),
            reason=reason or ("supported" if supported else "too little of the statement is in the passages"),
        )


def _best_passage(content: list[Token], p: _Passage) -> int | None:
    counts: dict[int, int] = {}
    stems = {t.stem for t in content}
    for sent, n in zip(p.sentences, p.offsets, strict=True):
        counts[n] = counts.get(n, 0) + len(stems & sent)
    best = max(counts.items(), key=lambda kv: (kv[1], -kv[0]), default=(None, 0))
    return best[0] if best[1] > 0 else None
