"""Embedding backends: the auto selection as a pure function, length-sorted batching, CPU flags, the probe on
fake backends, and one real load of the packaged MiniLM whose bf16/ONNX vectors must match fp32."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from ragstream.adapters.embedder import SentenceTransformerEmbedder
from ragstream.adapters.embedding import (
    MIN_COSINE,
    PROBE_TEXTS,
    REFERENCE,
    ProbeFigure,
    build_backend,
    cpu_flags,
    encode_sorted,
    has_native_bf16,
    length_sorted_batches,
    run_probe,
    select_backend,
    select_query_backend,
)
from ragstream.settings import EmbeddingSettings

pytestmark = pytest.mark.unit


class _Any:
    def __eq__(self, other: object) -> bool:
        return True


ANY_REASON = _Any()

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None


def fig(
    name: str,
    rate: float,
    cos: float = 1.0,
    compatible: bool = True,
    error: str | None = None,
    query_ms: float = 0.0,
):
    return ProbeFigure(name, rate, cos, cos, compatible, error, query_ms)


# --- selection (pure) ---------------------------------------------------------------------------------------


def test_picks_the_fastest_backend_within_tolerance() -> None:
    figures = [fig(REFERENCE, 100), fig("torch-bf16", 240, 0.99998), fig("onnx-fp32", 150, 1.0)]
    chosen = select_backend(figures)
    assert chosen.backend == "torch-bf16"
    assert "2.40x" in chosen.reason


def test_a_faster_backend_outside_tolerance_is_passed_over() -> None:
    figures = [fig(REFERENCE, 100), fig("torch-bf16", 300, 0.9990), fig("onnx-fp32", 130, 0.99999)]
    assert select_backend(figures).backend == "onnx-fp32"


def test_keeps_fp32_when_nothing_is_faster_and_says_why() -> None:
    figures = [fig(REFERENCE, 100), fig("torch-bf16", 60, 0.99998), fig("onnx-fp32", 103, 1.0)]
    chosen = select_backend(figures)
    assert chosen.backend == REFERENCE
    assert "kept" in chosen.reason and "torch-bf16: 0.60x" in chosen.reason  # 1.03x is below the 5 % gain


def test_queries_go_to_the_backend_fastest_for_one_text() -> None:
    # bf16 wins batches, ONNX fp32 wins single texts (per-call overhead): each path gets its own.
    figures = [
        fig(REFERENCE, 100, query_ms=60),
        fig("torch-bf16", 180, 0.99998, query_ms=55),
        fig("onnx-fp32", 90, 0.999999, query_ms=12),
    ]
    chosen = select_backend(figures)
    assert (chosen.backend, chosen.for_queries) == ("torch-bf16", "onnx-fp32")
    assert "queries: onnx-fp32 12.0 ms" in chosen.reason and chosen.as_dict()["query_backend"] == "onnx-fp32"


def test_query_backend_stays_within_tolerance_and_needs_a_real_gain() -> None:
    # int8 and a backend off tolerance never serve queries; a 2 % gain is noise.
    figures = [
        fig(REFERENCE, 100, query_ms=50),
        fig("onnx-int8", 300, 0.994, compatible=False, query_ms=5),
        fig("onnx-fp32", 100, 0.999, query_ms=5),
        fig("torch-bf16", 200, 0.99998, query_ms=49),
    ]
    assert select_query_backend(figures, "torch-bf16") == ("torch-bf16", ANY_REASON)
    assert select_backend(figures).for_queries == "torch-bf16"
    # Not measured (a configured backend, an old figure): the batch pick serves queries too.
    assert select_backend([fig(REFERENCE, 100), fig("torch-bf16", 200, 0.99999)]).for_queries == "torch-bf16"


def test_keeps_fp32_when_it_is_the_only_backend() -> None:
    chosen = select_backend([fig(REFERENCE, 100)])
    assert chosen.backend == REFERENCE and "no other backend" in chosen.reason


def test_never_picks_int8_even_when_fastest_and_close() -> None:
    figures = [fig(REFERENCE, 100), fig("onnx-int8", 900, 0.99995, compatible=False)]
    assert select_backend(figures).backend == REFERENCE
    figures.append(fig("torch-bf16", 150, 0.99999))
    assert select_backend(figures).backend == "torch-bf16"


def test_failed_backends_and_a_missing_reference() -> None:
    figures = [fig(REFERENCE, 100), fig("onnx-fp32", 0, 0, error="ImportError: no onnxruntime")]
    assert select_backend(figures).backend == REFERENCE
    assert select_backend([fig("torch-bf16", 500, 1.0)]).backend == REFERENCE


# --- length-sorted batching ---------------------------------------------------------------------------------


def test_batches_are_longest_first_and_cover_every_index_once() -> None:
    lengths = [3, 9, 1, 9, 5, 7, 2]
    batches = length_sorted_batches(lengths, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert flat[:2] == [1, 3]  # stable among equal lengths
    with pytest.raises(ValueError):
        length_sorted_batches(lengths, 0)


def test_encode_sorted_restores_the_input_order() -> None:
    texts = ["a" * n + str(i) for i, n in enumerate([5, 40, 1, 17, 17, 3, 60, 2, 9])]
    seen: list[list[str]] = []

    def encode(batch: list[str]) -> np.ndarray:
        seen.append(batch)
        return np.array([[len(t), hash(t) % 997] for t in batch], dtype=np.float32)

    out = encode_sorted(texts, 4, encode)
    expected = np.array([[len(t), hash(t) % 997] for t in texts], dtype=np.float32)
    np.testing.assert_array_equal(out, expected)
    assert all(len(a) >= len(b) for batch in seen for a, b in itertools.pairwise(batch))
    assert encode_sorted([], 4, encode).shape[0] == 0


# --- CPU flags and the probe on fake backends ---------------------------------------------------------------


def test_cpu_flags_from_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 amx_bf16 ht\n")
    assert cpu_flags(x86) == ["avx", "avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    assert has_native_bf16(cpu_flags(x86))
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert cpu_flags(arm) == ["asimd", "asimddp"] and not has_native_bf16(cpu_flags(arm))
    assert cpu_flags(tmp_path / "missing") == []


class FakeBackend:
    def __init__(self, name: str, noise: float = 0.0, fail: bool = False, compatible: bool = True) -> None:
        self.name, self.noise, self.fail, self.compatible = name, noise, fail, compatible

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.fail:
            raise RuntimeError("illegal instruction avoided")
        rows = [np.random.default_rng(len(t)).normal(size=8) for t in texts]
        vecs = np.array(rows) + self.noise * np.arange(8)
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def test_probe_reports_cosines_and_failures_without_raising() -> None:
    backends = {
        REFERENCE: FakeBackend(REFERENCE),
        "b": FakeBackend("b", 0.5),
        "c": FakeBackend("c", fail=True),
    }
    figures = {f.backend: f for f in run_probe(backends, PROBE_TEXTS[:16], reps=2)}
    assert figures[REFERENCE].mean_cosine == pytest.approx(1.0) and figures[REFERENCE].texts_per_s > 0
    assert figures["b"].mean_cosine < MIN_COSINE and figures["b"].error is None
    assert figures["c"].error is not None and "illegal" in figures["c"].error
    assert figures[REFERENCE].query_ms > 0 and figures["b"].query_ms > 0  # one-text latency timed too


def test_probe_texts_are_fixed_and_varied() -> None:
    assert len(PROBE_TEXTS) == 64 and len(set(PROBE_TEXTS)) == 64
    assert min(map(len, PROBE_TEXTS)) < 150 < 400 < max(map(len, PROBE_TEXTS))


# --- the real packaged model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auto_embedder() -> Iterator[tuple[SentenceTransformerEmbedder, dict[str, str]]]:
    # torch and onnxruntime set KMP_* and TORCHINDUCTOR_CACHE_DIR when imported: theirs, not the embedder's.
    import sentence_transformers  # noqa: F401

    if HAS_ORT:
        import onnxruntime  # noqa: F401
    from ragstream.adapters import embedder as module

    before = _env()
    with pytest.MonkeyPatch.context() as patch:
        # The real auto path (backends, probe, selection) on a quarter of the probe set: quick on busy hosts.
        patch.setattr(module, "run_probe", functools.partial(run_probe, texts=PROBE_TEXTS[::4], reps=1))
        patch.setattr(module, "_SELECTIONS", {})
        embedder = SentenceTransformerEmbedder(EmbeddingSettings(), batch_size=32)
    yield embedder, before


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def test_auto_embedder_picks_a_compatible_backend_without_side_effects(
    auto_embedder: tuple[SentenceTransformerEmbedder, dict[str, str]],
) -> None:
    embedder, env_before = auto_embedder
    cfg = EmbeddingSettings()
    assert _env() == env_before  # no HF_HUB_OFFLINE or any other process-wide setting
    assert embedder.backend in ("torch-fp32", "torch-bf16", "onnx-fp32")
    assert embedder.revision == cfg.revision and embedder.dimensions == 384
    assert embedder.selection.cpu_flags == tuple(cpu_flags())
    labels = {"model": cfg.model_id, "backend": embedder.backend}
    assert REGISTRY.get_sample_value("ragstream_embedding_backend", labels) == 1
    assert embedder.query_backend in ("torch-fp32", "torch-bf16", "onnx-fp32")
    labels = {"model": cfg.model_id, "backend": embedder.query_backend}
    assert REGISTRY.get_sample_value("ragstream_embedding_query_backend", labels) == 1
    assert all(f.query_ms > 0 for f in embedder.selection.figures if f.error is None)
    vecs = embedder.embed(["one query", "a second, longer text about Kafka consumer groups"])
    assert vecs.shape == (2, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_backend_vectors_match_fp32_within_tolerance(
    auto_embedder: tuple[SentenceTransformerEmbedder, dict[str, str]],
) -> None:
    embedder, _ = auto_embedder
    from ragstream.adapters.embedder import packaged_model_path, weights_sha256

    texts = list(PROBE_TEXTS[::4])
    sha = weights_sha256(packaged_model_path())
    ref = build_backend(REFERENCE, embedder.model, 8, sha).encode(texts)
    names = ["torch-bf16"] + (["onnx-fp32", "onnx-int8"] if HAS_ORT else [])
    for name in names:
        vecs = build_backend(name, embedder.model, 8, sha).encode(texts)
        cos = (vecs * ref).sum(axis=1)
        if name == "onnx-int8":
            assert 0.98 < cos.mean() < MIN_COSINE, f"int8 mean cosine {cos.mean()}"  # a new revision
        else:
            assert cos.mean() >= MIN_COSINE, f"{name} mean cosine {cos.mean()}"


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime not installed")
def test_onnx_runs_split_by_token_budget_give_the_same_vectors(
    auto_embedder: tuple[SentenceTransformerEmbedder, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragstream.adapters.embedder import packaged_model_path, weights_sha256
    from ragstream.adapters.embedding import backends

    onnx = build_backend("onnx-fp32", auto_embedder[0].model, 16, weights_sha256(packaged_model_path()))
    texts = list(PROBE_TEXTS[::5])
    whole = onnx.encode(texts)
    monkeypatch.setattr(backends, "MAX_TOKENS_PER_RUN", 64)  # a few rows per run
    np.testing.assert_allclose(onnx.encode(texts), whole, atol=1e-5)


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime not installed")
def test_int8_is_a_new_revision() -> None:
    cfg = EmbeddingSettings(backend="onnx-int8")
    embedder = SentenceTransformerEmbedder(cfg, batch_size=8)
    assert embedder.backend == "onnx-int8" and embedder.revision == cfg.revision + "+onnx-int8"


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="embedding backend"):
        SentenceTransformerEmbedder(EmbeddingSettings(backend="tpu-fp8"))
