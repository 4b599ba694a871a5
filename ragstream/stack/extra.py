"""Services beyond Kafka and Weaviate that `stack up` also manages (the local model server)."""

from __future__ import annotations

from typing import Any

from ragstream.settings import Settings


def extra_services(settings: Settings) -> list[Any]:
    return []
