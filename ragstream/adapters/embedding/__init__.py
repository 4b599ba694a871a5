"""Embedding backends behind the `Embedder` port and the start-up probe that picks one per host.

Backends: `torch-fp32` (the reference: sentence-transformers as before), `torch-bf16` (the same model
under `torch.autocast("cpu", dtype=torch.bfloat16)`), `onnx-fp32` and `onnx-int8` (ONNX Runtime on a graph
exported from the packaged weights and cached under ~/.cache/ragstream/models/onnx/<weights sha256>/).
`auto` probes the compatible ones on this host and keeps the fastest whose vectors match fp32; int8 is
never picked by `auto`: its vectors are a new embedding revision.
"""

from ragstream.adapters.embedding.backends import (
    AUTO,
    BACKENDS,
    INCOMPATIBLE_SUFFIX,
    REFERENCE,
    Backend,
    build_backend,
)
from ragstream.adapters.embedding.batching import encode_sorted, length_sorted_batches
from ragstream.adapters.embedding.cpu import cpu_flags, has_native_bf16
from ragstream.adapters.embedding.probe import (
    MIN_COSINE,
    MIN_GAIN,
    PROBE_TEXTS,
    QUERY_TEXTS,
    ProbeFigure,
    Selection,
    run_probe,
    select_backend,
    select_query_backend,
)

__all__ = [
    "AUTO",
    "BACKENDS",
    "INCOMPATIBLE_SUFFIX",
    "MIN_COSINE",
    "MIN_GAIN",
    "PROBE_TEXTS",
    "QUERY_TEXTS",
    "REFERENCE",
    "Backend",
    "ProbeFigure",
    "Selection",
    "build_backend",
    "cpu_flags",
    "encode_sorted",
    "has_native_bf16",
    "length_sorted_batches",
    "run_probe",
    "select_backend",
    "select_query_backend",
]
