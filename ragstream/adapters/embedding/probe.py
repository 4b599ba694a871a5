"""The start-up probe: time the candidate backends on a fixed text set, compare their vectors with fp32,
and pick (a pure function of the figures) the fastest one that matches."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ragstream.adapters.embedding.backends import REFERENCE, Backend

# Mean cosine to fp32 on the probe set at or above which two backends' vectors may serve one index
# generation (query and document vectors from different backends still rank the same).
MIN_COSINE = 0.9999
# A candidate must beat fp32 by this factor: a 1-2 % "win" is probe noise on a shared host, and switching
# backends for it would only add variance.
MIN_GAIN = 1.05

_SENTENCES = (
    "Kafka partitions are the unit of parallelism: each consumer in a group owns a disjoint set of them.",
    "The embedding model maps a passage of text to a 384-dimensional vector normalised to unit length.",
    "Patients receiving the higher dose showed a significant reduction in systolic blood pressure after "
    "twelve weeks, with no increase in adverse events.",
    "To reset your password, open the account settings page and follow the link sent to your e-mail.",
    "Weaviate stores each tenant's objects in its own shard, so deleting a tenant removes its data at once.",
    "How do I upgrade a Debian system to the next stable release without reinstalling?",
    "The committee approved the budget for the new library, subject to a review of the construction costs.",
    "Mitochondrial DNA is inherited from the mother and mutates faster than nuclear DNA.",
    "Retries use exponential backoff with jitter; after the fifth failure the record goes to a dead-letter "
    "topic together with the error code and the correlation id.",
    "Section 4.2 of the agreement limits liability to the fees paid in the twelve months before the claim.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Error 503: the service is temporarily unavailable, please try again in a few minutes.",
    "The gradient of the loss with respect to the weights is computed by back-propagation through time.",
    "Cut the onions finely, fry them in butter until golden, then add the rice and stir for two minutes.",
    "Access control lists attach groups to every chunk, and a query only sees chunks its caller may read.",
    "In 1969 the first message was sent over ARPANET between UCLA and the Stanford Research Institute.",
)


def _probe_texts() -> tuple[str, ...]:
    """64 distinct texts, 16 each of 1, 2, 4 and 8 sentences (about 20 to 220 tokens, ~6,000 in all):
    query-sized to chunk-sized, so the timing reflects both serving and ingestion, where long inputs
    (where bf16 and fused kernels gain most) take most of the time."""
    n = len(_SENTENCES)
    return tuple(" ".join(_SENTENCES[(i + j) % n] for j in range(k)) for k in (1, 2, 4, 8) for i in range(n))


PROBE_TEXTS = _probe_texts()
# Single texts timed one at a time for the query path (the retrieval stage embeds one question per call):
# there per-call overhead (Python, thread pool wake-up), not matrix throughput, decides, and the fastest
# backend for batches is not always the fastest for one short text.
QUERY_TEXTS = PROBE_TEXTS[:8]


@dataclass(frozen=True)
class ProbeFigure:
    backend: str
    texts_per_s: float
    mean_cosine: float
    min_cosine: float
    compatible: bool = True  # False: a different embedding revision (int8), never picked by auto
    error: str | None = None
    query_ms: float = 0.0  # median latency of one short text (QUERY_TEXTS); 0: not measured

    def as_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "texts_per_s": round(self.texts_per_s, 2),
            "mean_cosine": round(self.mean_cosine, 7),
            "min_cosine": round(self.min_cosine, 7),
            "compatible": self.compatible,
            "error": self.error,
            "query_ms": round(self.query_ms, 2),
        }


@dataclass(frozen=True)
class Selection:
    backend: str
    reason: str
    figures: tuple[ProbeFigure, ...] = ()
    cpu_flags: tuple[str, ...] = ()
    probe_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)
    # The backend single texts (queries) are embedded with; "" = `backend`. Always of `backend`'s class.
    query_backend: str = ""

    @property
    def for_queries(self) -> str:
        return self.query_backend or self.backend

    def as_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "query_backend": self.for_queries,
            "reason": self.reason,
            "probe_s": round(self.probe_s, 2),
            "cpu_flags": list(self.cpu_flags),
            "figures": [f.as_dict() for f in self.figures],
        }


def _summary(f: ProbeFigure, ref_rate: float) -> str:
    if f.error is not None:
        return f"{f.backend}: failed ({f.error})"
    gain = f.texts_per_s / ref_rate if ref_rate > 0 else float("nan")
    return f"{f.backend}: {gain:.2f}x, mean cosine {f.mean_cosine:.6f}"


def select_query_backend(
    figures: Sequence[ProbeFigure],
    batch_pick: str,
    min_cosine: float = MIN_COSINE,
    min_gain: float = MIN_GAIN,
) -> tuple[str, str]:
    """The backend for single texts: the compatible one (cosine >= `min_cosine`) with the lowest measured
    one-text latency when it beats the batch pick's by `min_gain`, else the batch pick; and why."""
    pick = next((f for f in figures if f.backend == batch_pick), None)
    timed = [
        f
        for f in figures
        if f.compatible and f.error is None and f.query_ms > 0 and f.mean_cosine >= min_cosine
    ]
    if pick is None or pick.query_ms <= 0 or not timed:
        return batch_pick, "queries: no one-text latency measured"
    best = min(timed, key=lambda f: f.query_ms)
    if best.backend != batch_pick and best.query_ms * min_gain <= pick.query_ms:
        return best.backend, (
            f"queries: {best.backend} {best.query_ms:.1f} ms per text vs {batch_pick} {pick.query_ms:.1f} ms"
        )
    return (
        batch_pick,
        f"queries: {batch_pick} {pick.query_ms:.1f} ms per text (fastest within {min_gain:.2f}x)",
    )


def select_backend(
    figures: Sequence[ProbeFigure],
    reference: str = REFERENCE,
    min_cosine: float = MIN_COSINE,
    min_gain: float = MIN_GAIN,
) -> Selection:
    """The fastest compatible backend whose mean cosine to the reference is >= `min_cosine` and whose speed
    is >= `min_gain` x the reference's; else the reference. Incompatible backends (int8) never qualify."""
    ref = next((f for f in figures if f.backend == reference), None)
    if ref is None or ref.error is not None or ref.texts_per_s <= 0:
        return Selection(reference, f"{reference} kept: no usable reference figure", tuple(figures))
    eligible = [
        f
        for f in figures
        if f.backend != reference
        and f.compatible
        and f.error is None
        and f.mean_cosine >= min_cosine
        and f.texts_per_s >= min_gain * ref.texts_per_s
    ]
    others = "; ".join(_summary(f, ref.texts_per_s) for f in figures if f.backend != reference)
    if not eligible:
        why = others or "no other backend available"
        reason = (
            f"{reference} kept: no compatible backend is >= {min_gain:.2f}x faster with mean cosine "
            f">= {min_cosine} ({why})"
        )
        query, why_query = select_query_backend(figures, reference, min_cosine, min_gain)
        return Selection(reference, f"{reason}; {why_query}", tuple(figures), query_backend=query)
    best = max(eligible, key=lambda f: f.texts_per_s)
    reason = f"{best.backend} picked: {_summary(best, ref.texts_per_s)} (probe: {others})"
    query, why_query = select_query_backend(figures, best.backend, min_cosine, min_gain)
    return Selection(best.backend, f"{reason}; {why_query}", tuple(figures), query_backend=query)


def _cosines(vecs: np.ndarray, ref: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vecs, axis=1) * np.linalg.norm(ref, axis=1)
    return (vecs * ref).sum(axis=1) / np.maximum(norms, 1e-12)


def run_probe(
    backends: Mapping[str, Backend],
    texts: Sequence[str] = PROBE_TEXTS,
    reps: int = 2,
    reference: str = REFERENCE,
    budget_s: float = 3.0,
) -> list[ProbeFigure]:
    """Each backend's texts/s (best of up to `reps` timed passes, interleaved across backends so a change in
    the host's load hits all alike; no further pass once `budget_s` is spent, so a slow or busy host still
    starts in seconds) and cosine to the reference's vectors. A backend that raises gets an `error`
    figure instead of stopping start-up."""
    batch = list(texts)
    start = time.perf_counter()
    vectors: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    best: dict[str, float] = {}
    for rep in range(max(reps, 1)):
        if rep > 0 and time.perf_counter() - start >= budget_s:
            break
        for name, backend in backends.items():
            if name in errors:
                continue
            try:
                if rep == 0:
                    backend.encode(batch[:8])  # one-time set-up (kernel selection, arenas) is not speed
                t0 = time.perf_counter()
                vecs = backend.encode(batch)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
                vectors.setdefault(name, vecs)
            except Exception as exc:  # a backend that cannot run here must not stop the worker
                errors[name] = f"{type(exc).__name__}: {exc}"[:200]
    query_ms = _query_latency({n: b for n, b in backends.items() if n not in errors}, errors)
    ref = vectors.get(reference)
    figures = []
    for name, backend in backends.items():
        if name in errors or ref is None:
            figures.append(ProbeFigure(name, 0.0, 0.0, 0.0, backend.compatible, errors.get(name, "no ref")))
            continue
        cos = _cosines(vectors[name], ref)
        rate = len(batch) / best[name]
        figures.append(
            ProbeFigure(
                name,
                rate,
                float(cos.mean()),
                float(cos.min()),
                backend.compatible,
                query_ms=query_ms.get(name, 0.0),
            )
        )
    return figures


def _query_latency(
    backends: Mapping[str, Backend], errors: dict[str, str], budget_s: float = 2.0
) -> dict[str, float]:
    """Median ms of one short text per backend, the backends taking turns text by text (a change in the
    host's load falls on all alike); the first call of each is warm-up. After `budget_s`, three samples
    each are enough (a busy host still starts in seconds)."""
    times: dict[str, list[float]] = {name: [] for name in backends}
    start = time.perf_counter()
    for i, text in enumerate((QUERY_TEXTS[0], *QUERY_TEXTS)):
        if i > 3 and time.perf_counter() - start >= budget_s:
            break
        for name, backend in backends.items():
            if name in errors:
                continue
            try:
                t0 = time.perf_counter()
                backend.encode([text])
                if i > 0:
                    times[name].append((time.perf_counter() - t0) * 1000)
            except Exception as exc:  # as in the batch passes: recorded, never fatal
                errors[name] = f"{type(exc).__name__}: {exc}"[:200]
    return {name: float(np.median(t)) for name, t in times.items() if t and name not in errors}
