"""Length-sorted batching: texts of similar length share a batch, so padding (wasted compute) stays small."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices into the input, longest first, cut into batches of at most `batch_size`.

    Longest first (as sentence-transformers does) so the largest allocation happens on the first batch;
    the sort is stable, so equal lengths keep their input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def encode_sorted(
    texts: Sequence[str], batch_size: int, encode_batch: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """`encode_batch` over length-sorted batches, rows put back in the input order (float32)."""
    batches = length_sorted_batches([len(t) for t in texts], batch_size)
    out: np.ndarray | None = None
    for idx in batches:
        vecs = np.asarray(encode_batch([texts[i] for i in idx]), dtype=np.float32)
        if out is None:
            out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
        out[idx] = vecs
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)
