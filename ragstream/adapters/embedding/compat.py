"""Which backends' vectors may share one index generation, and the query embedder a generation needs.

Two compatibility classes: `fp32` (torch fp32, torch bf16 autocast, ONNX fp32: mean cosine to fp32 >= 0.9999
on the probe set, so documents embedded by one and queries by another rank the same) and `int8` (ONNX
dynamic int8: cosine ~0.994, a new embedding revision, `<revision>+onnx-int8`). The class is part of the
revision string, so a generation record's `embedding_revision` says which class built it, old records too.
"""

from __future__ import annotations

from typing import Any, Protocol

from ragstream.adapters.embedding.backends import AUTO, BACKENDS, INCOMPATIBLE_SUFFIX, REFERENCE
from ragstream.ports import Embedder

FP32 = "fp32"
INT8 = "int8"
COMPAT_CLASS = {"torch-fp32": FP32, "torch-bf16": FP32, "onnx-fp32": FP32, "onnx-int8": INT8}
assert set(COMPAT_CLASS) == set(BACKENDS), "every backend has a compatibility class"


def compat_class(backend: str) -> str:
    """The class of a backend; `auto` only ever picks fp32-class backends."""
    if backend == AUTO:
        return FP32
    return COMPAT_CLASS[backend]


def revision_for(base_revision: str, backend: str) -> str:
    """The embedding revision a backend's vectors carry: the model's own for fp32-class backends."""
    return base_revision + INCOMPATIBLE_SUFFIX.get(backend, "")


def split_revision(revision: str) -> tuple[str, str]:
    """(the model's base revision, the compatibility class) of a recorded embedding revision."""
    for backend, suffix in INCOMPATIBLE_SUFFIX.items():
        if revision.endswith(suffix):
            return revision.removesuffix(suffix), compat_class(backend)
    return revision, FP32


def backend_for_class(cls: str, preferred: str = REFERENCE) -> str:
    """A backend of class `cls`: `preferred` when it is one (the probe's pick), else the class's first."""
    if compat_class(preferred) == cls:
        return preferred
    return next(b for b in BACKENDS if COMPAT_CLASS[b] == cls)


class Siblings(Protocol):
    """An embedder that can hand out the same model on a backend of another compatibility class."""

    def compatible_with(self, model_id: str, revision: str) -> Embedder | None: ...


def embedder_for_generation(embedder: Embedder, model_id: str, revision: str) -> Embedder | None:
    """The embedder whose vectors match a generation built with (`model_id`, `revision`): `embedder`
    itself when it matches, a sibling on the same loaded model when only the class differs (an int8
    generation queried by an fp32 worker, or the reverse), else None (another model: no dense search)."""
    if (embedder.model_id, embedder.revision) == (model_id, revision):
        return embedder
    sibling = getattr(embedder, "compatible_with", None)
    return sibling(model_id, revision) if callable(sibling) else None


def backend_info(embedder: Any) -> dict[str, Any]:
    """What a generation records about the backend that built it: the backend, its class, how it was
    chosen and, for `auto`, the probe's figures and the host's CPU flags. Embedders without a backend
    (the test hash embedder, the identity used to adopt a generation before any model loads) record the
    class their revision names."""
    describe = getattr(embedder, "backend_info", None)
    if callable(describe):
        return dict(describe())
    backend = str(getattr(embedder, "backend", "") or "unknown")
    return {"backend": backend, "compat": split_revision(str(embedder.revision))[1], "chosen_by": "none"}


class IncompatibleEmbedderError(RuntimeError):
    """A worker would write vectors into a generation built by another embedding revision."""


def check_writer(embedder: Embedder, recorded: tuple[str, str] | None, generation: str) -> None:
    """Refuse to write into `generation` with vectors of another model or compatibility class than its
    record names: an int8 worker must never add vectors to an fp32 generation in place (or the reverse);
    a new revision goes through `generation plan` / `build` / `promote`. None: not recorded, nothing to
    check (no registry yet, or a test's private generation)."""
    if recorded is None or (embedder.model_id, embedder.revision) == recorded:
        return
    model, revision = recorded
    raise IncompatibleEmbedderError(
        f"generation {generation} was built with {model} revision {revision} "
        f"({split_revision(revision)[1]} vectors); this worker embeds with {embedder.model_id} revision "
        f"{embedder.revision} ({split_revision(embedder.revision)[1]}): refusing to mix them in place. "
        "Configure embedding.backend of the generation's class, or build a new generation for this one."
    )
