"""Shared CLI helpers: settings built once, consoles, and the one-JSON-object-last rule."""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import Any

from rich.console import Console

from ragstream.settings import Settings

console = Console()
err = Console(stderr=True)


@cache
def settings() -> Settings:
    return Settings()


def emit_json(obj: Any) -> None:
    """Print one JSON object as the last line of stdout."""
    sys.stdout.write(json.dumps(obj, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()
