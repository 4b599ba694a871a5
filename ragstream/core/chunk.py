"""Chunking under a versioned policy: sizes in the embedding tokenizer's tokens, sections respected.

`chunk(doc, policy, tokenizer, ...)` is pure and deterministic. Chunk ids are
uuid5(tenant / document / source version / policy hash / position), so a replay writes the same ids and a
new document version gets new ids (written beside the old version, then the old one is deleted).
A deliberately degraded policy (for gate tests): `max_chunks_per_document=1, max_tokens=16` keeps only the
first few words of each document.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid

from pydantic import BaseModel, ConfigDict, Field

from ragstream.core.normalize import NormalizedDocument
from ragstream.core.tokenizer import Tokenizer

CHUNK_NAMESPACE = uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
_SENTENCE_END = re.compile(r"[.!?;:](?:[\"')\]]*)$")


class ChunkingPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = "section-window"
    version: int = 1
    max_tokens: int = Field(200, ge=8, le=8192)
    overlap_tokens: int = Field(32, ge=0)
    min_chunk_tokens: int = Field(24, ge=0)
    respect_sections: bool = True
    tokenizer_id: str = "sentence-transformers/all-MiniLM-L6-v2"
    max_chunks_per_document: int | None = None

    @property
    def policy_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Chunk(BaseModel):
    model_config = ConfigDict(frozen=True)
    chunk_id: str
    position: int
    text: str
    heading_path: tuple[str, ...]
    token_count: int
    char_start: int
    char_end: int
    policy_hash: str


def chunk_id_for(
    tenant_id: str, document_id: str, source_version: str, policy_hash: str, position: int
) -> str:
    return str(
        uuid.uuid5(CHUNK_NAMESPACE, f"{tenant_id}/{document_id}/{source_version}/{policy_hash}/{position}")
    )


def _windows(spans: list[tuple[int, int]], text: str, max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Token index windows [a, b) of at most max_tokens, ending at a sentence end where one is near."""
    out: list[tuple[int, int]] = []
    n = len(spans)
    start = 0
    while start < n:
        end = min(n, start + max_tokens)
        if end < n:
            # Prefer the last sentence end in the second half of the window.
            for j in range(end - 1, start + max_tokens // 2, -1):
                if (
                    _SENTENCE_END.search(text[spans[j][0] : spans[j][1]])
                    or "\n" in text[spans[j][1] : spans[j + 1][0]]
                ):
                    end = j + 1
                    break
        out.append((start, end))
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        # Start at a word boundary, not inside a word piece.
        while nxt < end and nxt > 0 and spans[nxt][0] == spans[nxt - 1][1]:
            nxt += 1
        start = nxt
    return out


def _units(
    doc: NormalizedDocument, policy: ChunkingPolicy, tok: Tokenizer
) -> list[tuple[tuple[str, ...], str, int]]:
    """Sections (with their char offset in doc.text), tiny neighbours under one heading merged."""
    units: list[tuple[tuple[str, ...], str, int]] = []
    offset = 0
    for s in doc.sections:
        units.append((s.heading_path, s.text, offset))
        offset += len(s.text) + 2
    if not policy.respect_sections:
        return [((), doc.text, 0)]
    merged: list[tuple[tuple[str, ...], str, int]] = []
    for path, text, off in units:
        if merged:
            ppath, ptext, poff = merged[-1]
            same_parent = ppath[:1] == path[:1]
            small = tok.count(ptext) < policy.min_chunk_tokens
            if same_parent and small and tok.count(ptext) + tok.count(text) <= policy.max_tokens:
                merged[-1] = (ppath, ptext + "\n\n" + text, poff)
                continue
        merged.append((path, text, off))
    return merged


def chunk(
    doc: NormalizedDocument,
    policy: ChunkingPolicy,
    tokenizer: Tokenizer,
    *,
    tenant_id: str,
    document_id: str,
    source_version: str,
) -> list[Chunk]:
    chunks: list[Chunk] = []
    ph = policy.policy_hash
    for path, text, base in _units(doc, policy, tokenizer):
        spans = tokenizer.offsets(text)
        if not spans:
            continue
        for a, b in _windows(
            spans, text, policy.max_tokens, min(policy.overlap_tokens, policy.max_tokens // 2)
        ):
            c0, c1 = spans[a][0], spans[b - 1][1]
            piece = text[c0:c1].strip()
            if not piece:
                continue
            pos = len(chunks)
            chunks.append(
                Chunk(
                    chunk_id=chunk_id_for(tenant_id, document_id, source_version, ph, pos),
                    position=pos,
                    text=piece,
                    heading_path=path,
                    token_count=b - a,
                    char_start=base + c0,
                    char_end=base + c1,
                    policy_hash=ph,
                )
            )
            if policy.max_chunks_per_document is not None and len(chunks) >= policy.max_chunks_per_document:
                return chunks
    return chunks
