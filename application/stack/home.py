"""Where a local stack keeps its state: data, logs, pids, generated secrets and certificates."""

from __future__ import annotations

import os
from pathlib import Path

from ragstream.settings import Settings


def stack_home(settings: Settings) -> Path:
    if settings.stack.home is not None:
        return settings.stack.home.resolve()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ragstream" / "stack"
