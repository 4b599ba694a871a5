"""Wiring of the serving consumers: adapters built once at start-up and injected into each handler."""

from __future__ import annotations

from functools import partial
from typing import Any

from ragstream.runtime.worker import Handler, Producer
from ragstream.settings import Settings


def open_store(settings: Settings) -> tuple[Any, Any]:
    from ragstream.adapters.store import WeaviateStore
    from ragstream.adapters.weaviate_client import connect

    client = connect(settings.weaviate)
    store = WeaviateStore(
        client,
        settings.index.chunks_collection,
        f"{settings.index.documents_collection}_{settings.index.generation}",
    )
    return client, store


def open_router(settings: Settings, client: Any, store: Any) -> Any:
    """Per-query generation routing (explicit, canary, per-tenant promotion, live alias)."""
    from ragstream.generations.registry import load_view
    from ragstream.generations.routing import GenerationRouter

    return GenerationRouter(
        client,
        settings.index,
        default=store,
        view_loader=lambda: load_view(client, settings),
        ttl_s=settings.generations.routing_ttl_s,
    )


def build_serving(
    name: str, settings: Settings, producer: Producer, **overrides: Any
) -> tuple[Handler, dict]:
    if name == "retrieval":
        from consumers.serving import retrieval
        from ragstream.adapters.embedder import SentenceTransformerEmbedder

        client, store = open_store(settings)
        emb = overrides.get("embedder") or SentenceTransformerEmbedder(settings.embedding)
        retriever = retrieval.Retriever(
            store,
            emb,
            settings.serving,
            settings.index.generation,
            acl_in_search=overrides.get("acl_in_search", True),
            router=open_router(settings, client, store),
        )
        return retrieval.build_handler(retriever), {"close": client.close, "component": retriever}
    if name == "rerank":
        from consumers.serving import rerank
        from ragstream.adapters.reranker import from_spec

        stage = rerank.RerankStage(
            overrides.get("reranker") or from_spec(settings.serving.rerank), settings.serving
        )
        return rerank.build_handler(stage), {"component": stage}
    if name == "generation":
        from consumers.serving import generation
        from ragstream.adapters.llm import OpenAIChat

        client, store = open_store(settings)
        llm = overrides.get("llm") or OpenAIChat(settings.llm)
        gen = generation.Generator(
            None if overrides.get("second_check") is False else store,
            llm,
            settings.serving,
            on_prompt=overrides.get("on_prompt"),
            router=open_router(settings, client, store),
        )
        return generation.build_handler(gen, partial(producer.send_many, wait=False)), {
            "close": client.close,
            "component": gen,
        }
    raise ValueError(f"unknown consumer {name!r}")
