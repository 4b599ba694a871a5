"""What a consumer's `build_handler(deps)` receives: the settings and the adapters it may use.

Built once at start-up by the composition root (`application.compose`), which fills in only what the
consumer needs (`NEEDS` in its module). Variations (a stub model, a test embedder, the leak suite's
switched-off checks) are `dataclasses.replace` on one value, never string-keyed overrides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from ragstream.core.chunk import ChunkingPolicy
from ragstream.core.prompt import TokenCounter
from ragstream.core.tokenizer import Tokenizer
from ragstream.ports import ChatModel, ChunkStore, Embedder, Reranker, Verifier
from ragstream.runtime.worker import Outbound
from ragstream.settings import Settings

if TYPE_CHECKING:
    from ragstream.generations.routing import GenerationRouter

Send = Callable[[Sequence[Outbound]], Awaitable[None]]
PromptHook = Callable[[str, list[dict[str, str]]], None]
Need = Literal[
    "store",
    "router",
    "embedder",
    "tokenizer",
    "policy",
    "reranker",
    "llm",
    "send",
    "count_tokens",
    "verifier",
]
T = TypeVar("T")


class MissingDependencyError(RuntimeError):
    """A consumer was built without an adapter it needs (a wiring mistake, found at start-up)."""


@dataclass(frozen=True)
class Deps:
    settings: Settings
    store: ChunkStore | None = None
    router: GenerationRouter | None = None
    embedder: Embedder | None = None
    tokenizer: Tokenizer | None = None
    policy: ChunkingPolicy | None = None
    reranker: Reranker | None = None
    llm: ChatModel | None = None
    # Prompt tokens counted with the serving model's tokenizer (ragstream.adapters.prompt_tokens).
    count_tokens: TokenCounter | None = None
    # Claim verdicts of the online verifier (ragstream.adapters.verifier.ModelVerifier).
    verifier: Verifier | None = None
    # Outputs sent before the handler returns (a token stream); the worker's producer, unacknowledged.
    send: Send | None = None
    # Tests capture the exact messages the model received (to prove nothing unauthorized got there).
    on_prompt: PromptHook | None = None
    # Only the leak suite's negative controls switch these off, to prove the other layer holds.
    acl_in_search: bool = True
    second_check: bool = True


def required(value: T | None, name: Need) -> T:
    """`deps.<name>`, which this consumer cannot work without."""
    if value is None:
        raise MissingDependencyError(f"deps.{name} is required by this consumer and was not wired")
    return value


def chunking_policy(settings: Settings) -> ChunkingPolicy:
    """The chunking policy the live pipeline runs with."""
    return ChunkingPolicy(
        max_tokens=settings.ingest.chunk_max_tokens, overlap_tokens=settings.ingest.chunk_overlap_tokens
    )
