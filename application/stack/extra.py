"""Services beyond Kafka and Weaviate that `stack up` also manages (the local model server)."""

from __future__ import annotations

from typing import Any

from ragstream.settings import Settings


def extra_services(settings: Settings) -> list[Any]:
    if settings.llm.local_model == "none":
        return []
    from application.stack.manager import stack_home
    from application.stack.model_server import ModelServerService

    return [ModelServerService(settings, stack_home(settings))]
