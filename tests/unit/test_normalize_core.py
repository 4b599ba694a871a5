"""The normalizer: every format, determinism, and a clear reason for every kind of bad input."""

from __future__ import annotations

import io

import pytest

from ragstream.core.normalize import (
    DOCX,
    HTML,
    MARKDOWN,
    PDF,
    TEXT,
    NormalizationError,
    NormalizationFailure,
    detect_mime,
    normalize,
)

pytestmark = pytest.mark.unit

PAGE = b"""<html><head><title>Guide</title><script>var secret = 1;</script></head><body>
<nav>Home | Login</nav><h1>Install</h1><p>Run the   installer.</p>
<h2>Options</h2><p>Use <b>--fast</b> for speed.</p><ul><li>one</li><li>two</li></ul>
<footer>(c) corp</footer></body></html>"""


def _docx_bytes(encrypt: bool = False) -> bytes:
    from docx import Document

    doc = Document()
    doc.add_heading("Handbook", level=1)
    doc.add_paragraph("Employees get twenty days of leave.")
    doc.add_heading("Travel", level=2)
    doc.add_paragraph("Book trains before flights.")
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def _pdf_bytes(text: str, password: str | None = None) -> bytes:
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
    )
    stream = DecodedStreamObject()
    stream.set_data(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())
    page[NameObject("/Contents")] = writer._add_object(stream)
    if password:
        writer.encrypt(password)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def test_html_structure_and_boilerplate() -> None:
    doc = normalize(PAGE, HTML)
    assert doc.title == "Guide"
    assert [s.heading_path for s in doc.sections] == [("Install",), ("Install", "Options")]
    assert doc.sections[0].text == "Run the installer."
    assert "secret" not in doc.text and "Login" not in doc.text and "corp" not in doc.text
    assert "one" in doc.sections[1].text


def test_markdown_headings_and_front_matter() -> None:
    md = b"---\nauthor: x\n---\n# Title\n\nIntro text.\n\n## Part A\n\nAlpha.\n\n```\ncode here\n```\n"
    doc = normalize(md, MARKDOWN)
    assert doc.title == "Title"
    assert ("Title", "Part A") in [s.heading_path for s in doc.sections]
    assert "author" not in doc.text and "code here" in doc.text


def test_docx_headings() -> None:
    doc = normalize(_docx_bytes(), DOCX)
    paths = [s.heading_path for s in doc.sections]
    assert ("Handbook",) in paths and ("Handbook", "Travel") in paths
    assert "twenty days" in doc.text


def test_pdf_text() -> None:
    doc = normalize(_pdf_bytes("Quarterly revenue grew nine percent."), PDF)
    assert "revenue grew nine percent" in doc.text
    assert doc.sections[0].heading_path == ("Page 1",)


def test_plain_text_underlined_headings() -> None:
    doc = normalize(b"Manual\n======\n\nFirst para\nwraps here.\n\nSetup\n-----\n\nDo it.\n", TEXT)
    assert doc.title == "Manual"
    assert doc.sections[0].text == "First para wraps here."
    assert doc.sections[-1].heading_path == ("Manual", "Setup")


@pytest.mark.parametrize(
    "raw,mime", [(PAGE, HTML), (b"# A\n\nb\n", MARKDOWN), ("héllo\r\nwörld".encode(), TEXT)]
)
def test_deterministic(raw: bytes, mime: str) -> None:
    a, b = normalize(raw, mime), normalize(raw, mime)
    assert a.model_dump_json() == b.model_dump_json()
    assert a.text_sha256 == b.text_sha256


def test_deterministic_docx_pdf() -> None:
    d, p = _docx_bytes(), _pdf_bytes("Stable text.")
    assert normalize(d, DOCX) == normalize(d, DOCX)
    assert normalize(p, PDF) == normalize(p, PDF)


@pytest.mark.parametrize(
    "raw,mime,reason",
    [
        (b"", TEXT, NormalizationFailure.EMPTY),
        (b"   \n ", HTML, NormalizationFailure.EMPTY),
        (b"x" * 101, TEXT, NormalizationFailure.OVERSIZED),
        (bytes(range(90)), HTML, NormalizationFailure.UNDECODABLE),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(60)), TEXT, NormalizationFailure.UNDECODABLE),
        (b"caf\xe9 au lait", TEXT, NormalizationFailure.UNDECODABLE),
        (b"%PDF-1.4 broken beyond repair", PDF, NormalizationFailure.CORRUPT),
        (b"not a pdf", PDF, NormalizationFailure.CORRUPT),
        (b"PK\x03\x04truncated", DOCX, NormalizationFailure.CORRUPT),
        (b"{}", "application/x-thing", NormalizationFailure.UNSUPPORTED_TYPE),
    ],
)
def test_bad_input_reasons(raw: bytes, mime: str, reason: NormalizationFailure) -> None:
    with pytest.raises(NormalizationError) as ei:
        normalize(raw, mime, max_bytes=100)
    assert ei.value.reason is reason
    assert ei.value.message


def test_encrypted_pdf() -> None:
    with pytest.raises(NormalizationError) as ei:
        normalize(_pdf_bytes("secret", password="pw"), PDF)
    assert ei.value.reason is NormalizationFailure.ENCRYPTED


def test_detect_mime() -> None:
    assert detect_mime("a.md", b"# x") == MARKDOWN
    assert detect_mime("report.txt", b"%PDF-1.7") == PDF
    assert detect_mime("x.docx", b"PK\x03\x04") == DOCX
    assert detect_mime("page", b"<!DOCTYPE html><html>") == HTML
    assert detect_mime("notes", b"hello") == TEXT
