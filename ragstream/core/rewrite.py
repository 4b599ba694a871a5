"""Query rewrite by normalization (Unicode NFKC, control characters out, white space folded, length cap)."""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")
_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def normalize_query(text: str, max_chars: int = 2000) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _CTRL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()[:max_chars]
