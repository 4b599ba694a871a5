"""Citation shaping: only chunks that were in the prompt can be cited."""

from __future__ import annotations

import re

from ragstream.core.prompt import ABSTAIN, Prompt
from schemas.serving import Citation

MARKER = re.compile(r"\[(\d{1,3})\]")
_ABSTAIN_NORM = " ".join(ABSTAIN.lower().split()).rstrip(".")


def is_abstention(answer: str) -> bool:
    text = " ".join(answer.lower().split())
    return not text or _ABSTAIN_NORM in text or text.startswith(("i don't know", "i do not know"))


def cited_ids(answer: str) -> list[str]:
    out: list[str] = []
    for m in MARKER.finditer(answer):
        if m.group(1) not in out:
            out.append(m.group(1))
    return out


def shape_citations(answer: str, prompt: Prompt) -> tuple[str, list[Citation]]:
    """Keep markers that name a prompt passage, drop the rest from the text; map them to citations."""
    cmap = prompt.citation_map()
    valid = [cid for cid in cited_ids(answer) if cid in cmap]
    cleaned = MARKER.sub(lambda m: m.group(0) if m.group(1) in cmap else "", answer).strip()
    citations = [
        Citation(
            citation_id=cid,
            document_id=cmap[cid].document_id,
            chunk_id=cmap[cid].chunk_id,
            source_id=cmap[cid].source_id,
            source_version=cmap[cid].source_version,
            title=cmap[cid].title,
        )
        for cid in valid
    ]
    return cleaned, citations
