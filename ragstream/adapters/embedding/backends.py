"""The backends: one loaded sentence-transformers model, run by torch (fp32 or bf16 autocast) or by ONNX
Runtime on a graph exported from it. All return L2-normalized float32 rows in the input order."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ragstream.adapters.embedding.batching import encode_sorted

if TYPE_CHECKING:
    from pathlib import Path

    from sentence_transformers import SentenceTransformer

AUTO = "auto"
REFERENCE = "torch-fp32"
BACKENDS = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8")
# Appended to the model revision by backends whose vectors are not interchangeable with fp32's: an index
# built with them is a new embedding revision (a new generation), never mixed with fp32 vectors.
INCOMPATIBLE_SUFFIX = {"onnx-int8": "+onnx-int8"}
# Padded tokens per ONNX Runtime call (rows x sequence length): bounds its memory arena, see OnnxBackend._run.
MAX_TOKENS_PER_RUN = 4096


class Backend(Protocol):
    name: str
    compatible: bool  # vectors interchangeable with the reference (same embedding revision)

    def encode(self, texts: list[str]) -> np.ndarray: ...


def _normalized(vecs: np.ndarray) -> np.ndarray:
    # Re-normalized in fp32: a bf16 or int8 path leaves norms a little off 1, and cosine = dot downstream.
    vecs = np.asarray(vecs, dtype=np.float32)
    return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)


class TorchBackend:
    """sentence-transformers `encode` (it sorts by length itself), optionally under bf16 autocast."""

    def __init__(self, model: SentenceTransformer, batch_size: int, bf16: bool = False) -> None:
        self.model = model
        self.batch_size = batch_size
        self.bf16 = bf16
        self.name = "torch-bf16" if bf16 else "torch-fp32"
        self.compatible = True

    def _precision(self) -> AbstractContextManager[Any]:
        import torch

        if not self.bf16:
            return nullcontext()
        return torch.autocast(self.model.device.type, dtype=torch.bfloat16)

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode(), self._precision():
            vecs = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return _normalized(vecs)


class OnnxBackend:
    """ONNX Runtime on the exported graph (transformer + mean pooling + normalize); the model's own
    preprocessing (tokenizer, truncation at max_seq_length) feeds it, so inputs match torch exactly."""

    def __init__(self, model: SentenceTransformer, onnx_path: Path, batch_size: int, int8: bool) -> None:
        import onnxruntime as ort
        import torch

        opts = ort.SessionOptions()
        # The same thread count torch uses, so the probe compares engines, not thread pools.
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between runs: spinning pool threads would take the cores from torch (the probe
        # runs both in one process) and from the worker's own Kafka and HTTP threads.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.model = model
        self.batch_size = batch_size
        self.name = "onnx-int8" if int8 else "onnx-fp32"
        self.compatible = not int8

    def _run(self, texts: list[str]) -> np.ndarray:
        features = self.model.preprocess(texts)
        feed = {name: features[name].numpy().astype(np.int64) for name in self.inputs}
        rows, seq = feed["input_ids"].shape
        # ONNX Runtime keeps every intermediate of the unfused graph in its arena: a 64 x 256 batch grew RSS
        # by ~1.5 GB, a 16 x 256 one by ~0.4 GB at the same speed. Padding is masked, so splitting the
        # padded batch by rows changes no vector.
        step = max(1, MAX_TOKENS_PER_RUN // seq)
        parts = [
            self.session.run(None, {k: v[i : i + step] for k, v in feed.items()})[0]
            for i in range(0, rows, step)
        ]
        return np.concatenate(parts)

    def encode(self, texts: list[str]) -> np.ndarray:
        return _normalized(encode_sorted(texts, self.batch_size, self._run))


def build_backend(name: str, model: SentenceTransformer, batch_size: int, weights_sha256: str) -> Backend:
    """One backend by name; raises (ImportError, RuntimeError, ...) when it cannot run on this host."""
    if name == "torch-fp32":
        return TorchBackend(model, batch_size)
    if name == "torch-bf16":
        return TorchBackend(model, batch_size, bf16=True)
    if name in ("onnx-fp32", "onnx-int8"):
        from ragstream.adapters.embedding.onnx_export import onnx_model

        int8 = name == "onnx-int8"
        return OnnxBackend(model, onnx_model(model, weights_sha256, int8=int8), batch_size, int8)
    raise ValueError(f"unknown embedding backend {name!r}: one of {(AUTO, *BACKENDS)}")
