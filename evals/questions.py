"""Curated question sets: the file format (YAML or JSONL), its pydantic models, the loader and validation.

A set is one YAML file (FORMAT.md documents every field) or a JSONL file of question objects (one per line;
an optional first line `{"set": {...}}` carries the set-level fields). Relative corpus paths resolve
against the set file's folder. Every problem is reported with the file and the question id.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

RequestClass = Literal["interactive", "batch"]
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_THRESHOLD = re.compile(r"^\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")

_STRICT = ConfigDict(frozen=True, extra="forbid")


class SetFormatError(ValueError):
    """A question set that does not load or validate; the message names the file and the problem."""


class Threshold(BaseModel):
    """A bound on one metric: `min` (value must be >= min) and/or `max` (value must be <= max)."""

    model_config = _STRICT
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs min or max")
        return self

    @classmethod
    def parse(cls, raw: Any) -> Threshold:
        """`{min: 0.8}`, `{max: 0}`, or a string `">= 0.8"` / `"<= 0"` / `"== 0"`."""
        if isinstance(raw, Threshold):
            return raw
        if isinstance(raw, str):
            m = _THRESHOLD.match(raw)
            if m is None:
                raise ValueError(f"threshold {raw!r}: write '>= 0.8', '<= 0.05' or '== 0'")
            op, val = m.group(1), float(m.group(2))
            if op in (">=", ">"):
                return cls(min=val)
            if op in ("<=", "<"):
                return cls(max=val)
            return cls(min=val, max=val)
        if isinstance(raw, dict):
            return cls.model_validate(raw)
        if isinstance(raw, int | float):
            return cls(min=float(raw))
        raise ValueError(f"threshold {raw!r}: expected a mapping or a string")

    def check(self, value: float) -> bool:
        """True when `value` lies within the bounds (a small tolerance absorbs float noise)."""
        eps = 1e-9
        if self.min is not None and value < self.min - eps:
            return False
        return not (self.max is not None and value > self.max + eps)

    def describe(self) -> str:
        if self.min is not None and self.max is not None and self.min == self.max:
            return f"== {self.min:g}"
        parts = []
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return " and ".join(parts)


def parse_thresholds(raw: Any, where: str = "thresholds") -> dict[str, Threshold]:
    """A mapping metric name -> threshold (any form `Threshold.parse` accepts)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SetFormatError(f"{where}: expected a mapping metric -> threshold")
    out: dict[str, Threshold] = {}
    for k, v in raw.items():
        try:
            out[str(k)] = Threshold.parse(v)
        except (ValueError, ValidationError) as exc:
            raise SetFormatError(f"{where}: {k}: {exc}") from None
    return out


class ChunkRef(BaseModel):
    """An expected chunk: a passage of `document` whose text contains `contains` (or a given chunk id)."""

    model_config = _STRICT
    document: str
    contains: str | None = None
    chunk_id: str | None = None

    @model_validator(mode="after")
    def _has_key(self) -> ChunkRef:
        if not self.contains and not self.chunk_id:
            raise ValueError("an expected chunk needs `contains` (a text snippet) or `chunk_id`")
        return self


class Caller(BaseModel):
    model_config = _STRICT
    tenant: str
    user: str
    groups: tuple[str, ...] = ()


class Question(BaseModel):
    """One question as a user of `tenant` asks it, with what a correct system must (not) do."""

    model_config = _STRICT
    id: str
    question: str = Field(min_length=1)
    tenant: str
    user: str
    groups: tuple[str, ...] = ()
    request_class: RequestClass = "interactive"
    top_k: int = Field(8, ge=1, le=50)
    # document id -> graded relevance (a plain list means relevance 1 for each)
    expected_docs: dict[str, int] = {}
    expected_chunks: tuple[ChunkRef, ...] = ()
    expected_facts: tuple[str, ...] = ()
    must_never_cite: tuple[str, ...] = ()
    expect_abstain: bool = False
    tags: tuple[str, ...] = ()

    @field_validator("id")
    @classmethod
    def _id_ok(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"id {v!r}: letters, digits and ._:/- only, at most 128 characters")
        return v

    @field_validator("expected_docs", mode="before")
    @classmethod
    def _docs(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            return {str(d): 1 for d in v}
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Question:
        if self.expect_abstain and (self.expected_docs or self.expected_facts or self.expected_chunks):
            raise ValueError("expect_abstain cannot have expected_docs, expected_chunks or expected_facts")
        clash = set(self.expected_docs) & set(self.must_never_cite)
        if clash:
            raise ValueError(f"documents both expected and never to be cited: {sorted(clash)}")
        for ref in self.expected_chunks:
            if self.expected_docs and ref.document not in self.expected_docs:
                raise ValueError(f"expected chunk of {ref.document!r} whose document is not expected")
        if any(r < 0 for r in self.expected_docs.values()):
            raise ValueError("relevance grades must be >= 0")
        return self

    @property
    def caller(self) -> Caller:
        return Caller(tenant=self.tenant, user=self.user, groups=self.groups)

    @property
    def judged(self) -> bool:
        """Whether retrieval metrics apply (the question names at least one relevant document)."""
        return any(r > 0 for r in self.expected_docs.values())


class CorpusFolder(BaseModel):
    """Every file under `path` is published to `tenant` with this ACL (document id = relative path)."""

    model_config = _STRICT
    path: Path
    tenant: str
    groups: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()


class InlineDocument(BaseModel):
    """A document written into the set itself (restricted documents, canaries, injection attempts)."""

    model_config = _STRICT
    id: str
    tenant: str
    text: str = Field(min_length=1)
    title: str = ""
    mime_type: str = "text/markdown"
    groups: tuple[str, ...] = ()
    principals: tuple[str, ...] = ()


class QuestionSet(BaseModel):
    model_config = _STRICT
    name: str
    description: str = ""
    version: int = 1
    corpus: tuple[CorpusFolder, ...] = ()
    documents: tuple[InlineDocument, ...] = ()
    thresholds: dict[str, Threshold] = {}
    questions: tuple[Question, ...]
    source: Path | None = None  # the file it was loaded from (set by the loader)

    @field_validator("thresholds", mode="before")
    @classmethod
    def _thresholds(cls, v: Any) -> Any:
        return parse_thresholds(v)

    @model_validator(mode="after")
    def _unique(self) -> QuestionSet:
        if not self.questions:
            raise ValueError("a set needs at least one question")
        seen: set[str] = set()
        for q in self.questions:
            if q.id in seen:
                raise ValueError(f"duplicate question id {q.id!r}")
            seen.add(q.id)
        docs: set[tuple[str, str]] = set()
        for d in self.documents:
            if (d.tenant, d.id) in docs:
                raise ValueError(f"duplicate inline document {d.tenant}/{d.id}")
            docs.add((d.tenant, d.id))
        return self

    @property
    def slug(self) -> str:
        """A file-system-safe name for the set's result folder."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.name).strip("-") or "set"

    def tenants(self) -> list[str]:
        names = {q.tenant for q in self.questions} | {c.tenant for c in self.corpus}
        return sorted(names | {d.tenant for d in self.documents})


def _apply_defaults(raw: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **raw}


def _format_error(path: Path, exc: ValidationError, qid: str | None = None) -> SetFormatError:
    first = exc.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    where = f"{path} question {qid!r}" if qid else str(path)
    return SetFormatError(f"{where}: {loc + ': ' if loc else ''}{first['msg']}")


def _build(path: Path, head: dict[str, Any], rows: list[dict[str, Any]]) -> QuestionSet:
    defaults = head.pop("defaults", None) or {}
    if not isinstance(defaults, dict):
        raise SetFormatError(f"{path}: defaults must be a mapping")
    questions = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise SetFormatError(f"{path}: question #{i} is not a mapping")
        merged = _apply_defaults(row, defaults)
        merged.setdefault("id", f"q{i:03d}")
        try:
            questions.append(Question.model_validate(merged))
        except ValidationError as exc:
            raise _format_error(path, exc, str(merged.get("id"))) from None
    corpus = []
    for c in head.pop("corpus", None) or []:
        if isinstance(c, dict) and "path" in c and not Path(str(c["path"])).is_absolute():
            c = {**c, "path": (path.parent / str(c["path"])).resolve()}
        corpus.append(c)
    head.setdefault("name", path.stem)
    try:
        return QuestionSet.model_validate({**head, "corpus": corpus, "questions": questions, "source": path})
    except ValidationError as exc:
        raise _format_error(path, exc) from None


def load_set(path: str | Path) -> QuestionSet:
    """Load and validate a question set (`.yaml`/`.yml` or `.jsonl`)."""
    p = Path(path)
    if not p.is_file():
        raise SetFormatError(f"{p}: file not found")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".jsonl":
        head: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SetFormatError(f"{p}:{n}: invalid JSON ({exc.msg})") from None
            if isinstance(obj, dict) and "set" in obj and not rows and not head:
                if not isinstance(obj["set"], dict):
                    raise SetFormatError(f"{p}:{n}: `set` must be an object")
                head = dict(obj["set"])
                continue
            rows.append(obj)
        return _build(p, head, rows)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SetFormatError(f"{p}: invalid YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise SetFormatError(f"{p}: expected a mapping with `questions`")
    head = dict(doc)
    rows = head.pop("questions", None)
    if not isinstance(rows, list):
        raise SetFormatError(f"{p}: `questions` must be a list")
    return _build(p, head, rows)


def load_thresholds(path: str | Path) -> dict[str, Threshold]:
    """A thresholds file (YAML or JSON): a mapping metric -> threshold, or `{thresholds: {...}}`."""
    p = Path(path)
    if not p.is_file():
        raise SetFormatError(f"{p}: file not found")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SetFormatError(f"{p}: invalid YAML ({exc})") from None
    if isinstance(doc, dict) and "thresholds" in doc:
        doc = doc["thresholds"]
    return parse_thresholds(doc, str(p))
