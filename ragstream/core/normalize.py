"""Normalize raw documents (HTML, Markdown, PDF, DOCX, plain text) into clean text with structure.

Deterministic: the same bytes and the same NORMALIZER_VERSION give byte-identical output (NFC Unicode,
normalized newlines and whitespace, no time or locale dependence). Any change of output for the same bytes
must bump NORMALIZER_VERSION. Bad input raises NormalizationError with a reason a dead letter can carry.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from enum import StrEnum
from pathlib import PurePosixPath

from pydantic import BaseModel, ConfigDict

NORMALIZER_VERSION = "norm-1"

HTML = "text/html"
MARKDOWN = "text/markdown"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
TEXT = "text/plain"
SUPPORTED = (HTML, MARKDOWN, PDF, DOCX, TEXT)

_EXT = {
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".pdf": PDF,
    ".docx": DOCX,
    ".txt": TEXT,
    ".text": TEXT,
    ".rst": TEXT,
    ".csv": TEXT,
    ".log": TEXT,
}


class NormalizationFailure(StrEnum):
    EMPTY = "empty"
    OVERSIZED = "oversized"
    UNDECODABLE = "undecodable"
    ENCRYPTED = "encrypted"
    CORRUPT = "corrupt"
    UNSUPPORTED_TYPE = "unsupported_type"


class NormalizationError(Exception):
    def __init__(self, reason: NormalizationFailure, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class Section(BaseModel):
    model_config = ConfigDict(frozen=True)
    heading_path: tuple[str, ...] = ()
    text: str


class NormalizedDocument(BaseModel):
    model_config = ConfigDict(frozen=True)
    title: str
    sections: tuple[Section, ...]
    mime_type: str
    normalizer_version: str = NORMALIZER_VERSION
    content_sha256: str = ""
    text_sha256: str = ""

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


def detect_mime(filename: str | None, raw: bytes) -> str:
    """Magic bytes first (a PDF named .txt is a PDF), then the extension, else plain text."""
    if raw.startswith(b"%PDF"):
        return PDF
    if raw.startswith(b"PK\x03\x04") and (filename or "").lower().endswith(".docx"):
        return DOCX
    ext = PurePosixPath(filename or "").suffix.lower()
    if ext in _EXT:
        return _EXT[ext]
    head = raw[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return HTML
    return TEXT


# --- text cleaning -------------------------------------------------------------------------------------
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")


def clean(text: str) -> str:
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CTRL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def decode_text(raw: bytes) -> str:
    """Strict UTF-8 (BOM allowed), else UTF-16 with a BOM; binary masquerading as text is refused."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise NormalizationError(NormalizationFailure.UNDECODABLE, f"invalid UTF-16: {exc}") from exc
    if b"\x00" in raw[:8192]:
        raise NormalizationError(
            NormalizationFailure.UNDECODABLE, "binary content (NUL bytes) labelled as text"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NormalizationError(
            NormalizationFailure.UNDECODABLE, f"not valid UTF-8 at byte {exc.start}"
        ) from exc
    controls = sum(1 for c in text[:8192] if ord(c) < 32 and c not in "\n\r\t\f")
    if controls > max(8, len(text[:8192]) // 100):
        raise NormalizationError(NormalizationFailure.UNDECODABLE, "too many control characters for text")
    return text


# --- structure ----------------------------------------------------------------------------------------
class _Builder:
    """Collects (heading path, paragraphs) as a parser walks a document."""

    def __init__(self) -> None:
        self.path: list[tuple[int, str]] = []
        self.sections: list[Section] = []
        self.buf: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.flush()
        text = clean(text)
        if not text:
            return
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text))

    def para(self, text: str) -> None:
        text = clean(text)
        if text:
            self.buf.append(text)

    def flush(self) -> None:
        if self.buf:
            self.sections.append(
                Section(heading_path=tuple(t for _, t in self.path), text="\n\n".join(self.buf))
            )
            self.buf = []

    def done(self) -> tuple[Section, ...]:
        self.flush()
        return tuple(self.sections)


_HTML_DROP = ("script", "style", "noscript", "nav", "footer", "header", "aside", "form", "template", "svg")
_BLOCKS = ("p", "li", "pre", "blockquote", "td", "th", "dt", "dd", "figcaption", "caption")
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_WANTED = frozenset((*_HEADINGS, *_BLOCKS))
_DROP_SET = frozenset(_HTML_DROP)
_BLOCK_SET = frozenset(_BLOCKS)


def _html(raw: bytes) -> tuple[str, tuple[Section, ...]]:
    import warnings

    from bs4 import BeautifulSoup, Tag, XMLParsedAsHTMLWarning

    text = decode_text(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)  # XHTML pages parse fine as HTML
        soup = BeautifulSoup(text, "lxml")
    for tag in [t for t in soup.descendants if isinstance(t, Tag) and t.name in _DROP_SET]:
        tag.decompose()
    title = clean(soup.title.get_text(" ")) if soup.title else ""
    body = soup.body or soup
    b = _Builder()
    # Plain name checks over the tree, in document order: bs4's find_all/find_parent filters cost more
    # than the parse itself on large pages (same elements, same order).
    for el in body.descendants:
        if not isinstance(el, Tag) or el.name not in _WANTED:
            continue
        if el.name in _HEADINGS:
            b.heading(int(el.name[1]), el.get_text(" "))
            if not title and el.name == "h1":
                title = clean(el.get_text(" "))
        elif el.name == "pre":
            b.para(el.get_text("\n"))
        elif not any(p.name in _BLOCK_SET for p in el.parents):  # nested: read once, by the outermost
            b.para(" ".join(el.get_text(" ").split()))
    sections = b.done()
    if not sections:
        loose = clean(body.get_text("\n"))
        sections = (Section(text=loose),) if loose else ()
    return title, sections


def _markdown(raw: bytes) -> tuple[str, tuple[Section, ...]]:
    from markdown_it import MarkdownIt

    text = decode_text(raw)
    if text.startswith("---\n"):  # YAML front matter is metadata, not content
        end = text.find("\n---", 4)
        if end != -1:
            text = text[end + 4 :]
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    b = _Builder()
    title = ""
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            content = tokens[i + 1].content
            b.heading(int(tok.tag[1]), content)
            if not title and tok.tag == "h1":
                title = clean(content)
        elif tok.type in ("fence", "code_block") or (
            tok.type == "inline" and i > 0 and tokens[i - 1].type != "heading_open"
        ):
            b.para(tok.content)
    return title, b.done()


_HYPHEN = re.compile(r"(\w)-\n(\w)")


def _pdf(raw: bytes) -> tuple[str, tuple[Section, ...]]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw), strict=False)
        if reader.is_encrypted:
            raise NormalizationError(NormalizationFailure.ENCRYPTED, "the PDF is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = str((reader.metadata or {}).get("/Title") or "")
    except NormalizationError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise NormalizationError(NormalizationFailure.CORRUPT, f"unreadable PDF: {exc}") from exc
    sections = []
    for n, page in enumerate(pages, 1):
        text = clean(_HYPHEN.sub(r"\1\2", page))
        if text:
            sections.append(Section(heading_path=(f"Page {n}",), text=text))
    first = sections[0].text.split("\n", 1)[0] if sections else ""
    return clean(meta_title) or first[:200], tuple(sections)


def _docx(raw: bytes) -> tuple[str, tuple[Section, ...]]:
    import zipfile

    from docx import Document

    try:
        doc = Document(io.BytesIO(raw))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise NormalizationError(NormalizationFailure.CORRUPT, f"unreadable DOCX: {exc}") from exc
    except Exception as exc:
        raise NormalizationError(NormalizationFailure.CORRUPT, f"unreadable DOCX: {exc}") from exc
    b = _Builder()
    title = clean(doc.core_properties.title or "")
    for para in doc.paragraphs:
        style = (para.style.name if para.style is not None else "") or ""
        if style == "Title":
            title = title or clean(para.text)
        elif style.startswith("Heading") and style[7:].strip().isdigit():
            b.heading(int(style[7:]), para.text)
        else:
            b.para(para.text)
    for table in doc.tables:
        for row in table.rows:
            b.para(" | ".join(clean(c.text) for c in row.cells))
    return title, b.done()


_UNDERLINE = re.compile(r"^(=+|-+)$")


def _text(raw: bytes) -> tuple[str, tuple[Section, ...]]:
    text = clean(decode_text(raw))
    b = _Builder()
    title = ""
    lines = text.split("\n")
    para: list[str] = []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line and _UNDERLINE.match(nxt) and len(nxt) >= max(3, len(line) // 2):
            b.para(" ".join(para))
            para = []
            level = 1 if nxt.startswith("=") else 2
            b.heading(level, line)
            title = title or line
        elif _UNDERLINE.match(line) and para == [] and i > 0 and lines[i - 1]:
            continue
        elif not line:
            b.para(" ".join(para))
            para = []
        else:
            para.append(line)
    b.para(" ".join(para))
    sections = b.done()
    if not title and sections:
        title = sections[0].text.split("\n", 1)[0][:120]
    return title, sections


_PARSERS = {HTML: _html, MARKDOWN: _markdown, PDF: _pdf, DOCX: _docx, TEXT: _text}


def normalize(
    raw: bytes, mime_type: str, *, max_bytes: int = 20_000_000, filename: str | None = None
) -> NormalizedDocument:
    """Raw bytes of a known type -> NormalizedDocument, or NormalizationError with a reason."""
    mime = (mime_type or "").split(";")[0].strip().lower() or detect_mime(filename, raw)
    if mime == "text/x-markdown":
        mime = MARKDOWN
    if not raw or not raw.strip():
        raise NormalizationError(NormalizationFailure.EMPTY, "the document has no content")
    if len(raw) > max_bytes:
        raise NormalizationError(
            NormalizationFailure.OVERSIZED, f"{len(raw)} bytes exceeds the limit of {max_bytes}"
        )
    parser = _PARSERS.get(mime)
    if parser is None:
        raise NormalizationError(NormalizationFailure.UNSUPPORTED_TYPE, f"no normalizer for {mime!r}")
    if mime == PDF and not raw.startswith(b"%PDF"):
        raise NormalizationError(NormalizationFailure.CORRUPT, "labelled PDF but has no %PDF header")
    if mime == DOCX and not raw.startswith(b"PK"):
        raise NormalizationError(NormalizationFailure.CORRUPT, "labelled DOCX but is not a zip package")
    title, sections = parser(raw)
    sections = tuple(s for s in sections if s.text)
    if not sections:
        raise NormalizationError(NormalizationFailure.EMPTY, "no text could be extracted")
    body = "\n\n".join(s.text for s in sections)
    return NormalizedDocument(
        title=title,
        sections=sections,
        mime_type=mime,
        content_sha256=hashlib.sha256(raw).hexdigest(),
        text_sha256=hashlib.sha256(body.encode()).hexdigest(),
    )
