"""Embedding backends benchmark (no stack needed): every backend on the same SciFact passages, in one run.

1. `auto`, in a fresh process: the start-up probe as a worker on this host runs it, and what it picks.
2. All backends on one loaded model, taking turns slice by slice on the same texts (so a change in a shared
   host's load falls on every backend alike): passages/s on the first `--passages` SciFact abstracts
   (title + text, the configured batch size, after a warm-up), single-query latency p50/p95 (one query to
   each backend in turn), mean/min cosine of each backend's vectors to torch fp32's, and nDCG@10 on the
   SciFact test queries by brute-force cosine over the same corpus for every backend (so `ndcg_delta`
   compares backends, not indexes).
3. Per backend, a process holding only that backend: RSS after embedding a batch, and its start-up time.
4. Per worker (`ragstream worker NAME` without Kafka: the CLI's import chain, then the handler built as
   `wire` builds it; the gateway app for `gateway`): RSS, and whether torch was imported. The stores are
   in memory (no Weaviate writes), the embedding workers load the model on the `auto` backend.

The corpus is a subset by default, to keep the run to minutes on two cores: the timed passages, every
document judged for a test query, and unjudged ones in file order up to `--corpus-docs` (0: all 5,183).
nDCG on a subset is higher than on the full corpus; the delta between backends is what counts here.

Last line: one JSON object: `backend` (what auto picked), `speedup` (its passages/s / torch fp32's),
`ndcg_delta`, `cosine_to_fp32`, then per-backend figures and the host's CPU flags.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragstream.core.stats import percentiles

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"  # ../shared from the root
BACKENDS = ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8")
REFERENCE = "torch-fp32"
SUBSET_NOTE = "subset: the timed passages, every judged document, unjudged ones in file order up to the size"


@dataclass(frozen=True)
class Data:
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    corpus_total: int


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines()[1:]:  # header; BEIR writes CRLF, splitlines drops both
        qid, did, score = line.strip().split("\t")
        out.setdefault(qid, {})[did] = int(score)
    return out


def load_data(data: Path, passages: int, corpus_docs: int) -> Data:
    """The first `passages` abstracts, then judged documents and unjudged fill in file order."""
    corpus = [json.loads(line) for line in (data / "corpus.jsonl").read_text().splitlines() if line]
    qrels = _qrels(data / "qrels" / "test.tsv")
    judged = {d for rels in qrels.values() for d in rels}
    rest = corpus[passages:]
    if 0 < corpus_docs < len(corpus):
        room = corpus_docs - passages - sum(d["_id"] in judged for d in rest)
        kept = []
        for d in rest:
            if d["_id"] in judged or room > 0:
                room -= d["_id"] not in judged
                kept.append(d)
        rest = kept
    docs = corpus[:passages] + rest
    queries = {
        q["_id"]: q["text"] for q in map(json.loads, (data / "queries.jsonl").read_text().splitlines())
    }
    qids = [q for q in qrels if q in queries]
    return Data(
        doc_ids=[d["_id"] for d in docs],
        doc_texts=[f"{d['title']}\n{d['text']}" for d in docs],
        query_ids=qids,
        query_texts=[queries[q] for q in qids],
        qrels={q: qrels[q] for q in qids},
        corpus_total=len(corpus),
    )


# --- the worker processes -----------------------------------------------------------------------------------


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _embedder(backend: str) -> tuple[Any, float]:
    from ragstream.adapters.embedder import SentenceTransformerEmbedder
    from ragstream.settings import EmbeddingSettings, Settings

    batch = Settings().index.embedding_batch_size
    return _timed(SentenceTransformerEmbedder, EmbeddingSettings(backend=backend), batch)


def auto_worker() -> dict[str, Any]:
    """What a worker starting on this host picks (a fresh process: the probe as at a real start)."""
    embedder, start_s = _embedder("auto")
    return {
        "backend": embedder.backend,
        "revision": embedder.revision,
        "start_s": round(start_s, 2),
        "probe": embedder.selection.as_dict(),
    }


def rss_worker(backend: str, data: Data) -> dict[str, Any]:
    """A process holding only this backend, after embedding a batch of passages: its memory and start-up."""
    embedder, start_s = _embedder(backend)
    embedder.embed(data.doc_texts[:64])
    return {
        "start_s": round(start_s, 2),
        "rss_mb": round(_rss_mb(), 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


# The workers whose RSS is reported, with the rerank setting each runs under.
WORKERS = {
    "normalizer": "lexical",
    "chunker": "lexical",
    "embedder": "lexical",
    "retrieval": "lexical",
    "rerank-none": "none",
    "rerank-lexical": "lexical",
    "generation": "lexical",
    "gateway": "lexical",
}


def build_worker(case: str) -> dict[str, Any]:
    """RSS of one worker process once built (as `ragstream worker NAME` builds it, minus Kafka)."""
    import application.cli.main  # noqa: F401  (the command's whole import chain, as a worker loads it)
    from ragstream.settings import Settings

    base = Settings()
    s = base.model_copy(update={"serving": base.serving.model_copy(update={"rerank": WORKERS[case]})})
    t0 = time.perf_counter()
    if case == "gateway":
        from gateway.app import create_app

        create_app(s)
    else:
        from application.compose import shared_embedder, wire
        from ragstream.adapters.memory_store import MemoryChunkStore
        from ragstream.runtime.deps import Deps

        class _NoProducer:
            def send_many(self, *a: Any, **k: Any) -> None:
                raise AssertionError("nothing is sent while building")

        name = case.partition("-")[0]
        deps = Deps(s, store=MemoryChunkStore())
        if name in ("embedder", "retrieval"):
            deps = Deps(s, store=MemoryChunkStore(), embedder=shared_embedder(s))
        wire(name, deps, _NoProducer())  # type: ignore[arg-type]
    heavy = [m for m in ("torch", "sentence_transformers", "transformers", "onnxruntime") if m in sys.modules]
    return {
        "rss_mb": round(_rss_mb(), 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "build_s": round(time.perf_counter() - t0, 2),
        "imports": heavy,
    }


def _interleaved(
    encoders: dict[str, Callable[[list[str]], np.ndarray]], texts: list[str], slice_size: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each backend on the same slices, taking turns slice by slice (the first backend of a turn rotates),
    so a change in the host's load during the run falls on all backends alike. Vectors and seconds."""
    names = list(encoders)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    seconds = dict.fromkeys(names, 0.0)
    for turn, k in enumerate(range(0, len(texts), slice_size)):
        part = texts[k : k + slice_size]
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            vecs, dt = _timed(encoders[name], part)
            parts[name].append(vecs)
            seconds[name] += dt
    return {n: np.concatenate(parts[n]) for n in names}, seconds


def compare_worker(data: Data, passages: int, latency_queries: int, out: Path) -> dict[str, Any]:
    """Every backend on one loaded model, interleaved: passages/s on the timed passages (slices of two
    batches), then the rest of the corpus and the queries (vectors saved to `out`), then single-query
    latency, one query to every backend in turn."""
    import torch

    from ragstream.adapters.embedder import packaged_model_path, weights_sha256
    from ragstream.adapters.embedding import build_backend

    ref, _ = _embedder(REFERENCE)
    sha = weights_sha256(packaged_model_path())
    encoders = {n: build_backend(n, ref.model, ref.batch_size, sha).encode for n in BACKENDS}
    texts = data.doc_texts
    for encode in encoders.values():
        encode(texts[-32:])  # warm-up, on passages outside the timed set
    timed, seconds = _interleaved(encoders, texts[:passages], 2 * ref.batch_size)
    rest, _ = _interleaved(encoders, texts[passages:], 4 * ref.batch_size)
    queries, _ = _interleaved(encoders, data.query_texts, 4 * ref.batch_size)
    latency: dict[str, list[float]] = {n: [] for n in BACKENDS}
    for q in data.query_texts[:latency_queries]:
        for name, encode in encoders.items():
            latency[name].append(_timed(encode, [q])[1] * 1000)
    np.savez(
        out,
        **{f"{n}.docs": np.concatenate([timed[n], rest[n]]) for n in BACKENDS},
        **{f"{n}.queries": queries[n] for n in BACKENDS},
    )
    figures: dict[str, Any] = {}
    for name in BACKENDS:
        got = percentiles(latency[name], (50, 95), empty=float("nan"))
        figures[name] = {"passages_per_s": round(passages / seconds[name], 2)} | {
            f"query_latency_{k}_ms": round(v, 2) for k, v in got.items()
        }
    return {"batch_size": ref.batch_size, "threads": torch.get_num_threads(), "backends": figures}


# --- the whole run ------------------------------------------------------------------------------------------


def _spawn(args: argparse.Namespace, mode: str, out: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.embed", "--worker", mode, *_data_flags(args)]
    if out is not None:
        cmd += ["--out", str(out)]
    print(f"== {mode}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True, cwd=Path(__file__).parents[1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _data_flags(args: argparse.Namespace) -> list[str]:
    return [
        f"--data={args.data}",
        f"--passages={args.passages}",
        f"--corpus-docs={args.corpus_docs}",
        f"--latency-queries={args.latency_queries}",
    ]


def ndcg10(data: Data, docs: np.ndarray, queries: np.ndarray) -> float:
    from evals.metrics import ndcg_at_k

    top = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    scores = [
        ndcg_at_k([data.doc_ids[j] for j in row], data.qrels[q], 10)
        for q, row in zip(data.query_ids, top, strict=True)
    ]
    return float(np.mean(scores))


def _cosine(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.mean()), float(cos.min())


def _quality(data: Data, vectors: Any) -> dict[str, dict[str, float]]:
    ref_docs, ref_queries = vectors[f"{REFERENCE}.docs"], vectors[f"{REFERENCE}.queries"]
    ref_ndcg = ndcg10(data, ref_docs, ref_queries)
    out = {}
    for name in BACKENDS:
        docs, queries = vectors[f"{name}.docs"], vectors[f"{name}.queries"]
        mean, low = _cosine(docs, ref_docs)
        ndcg = ndcg10(data, docs, queries)
        out[name] = {
            "cosine_to_fp32": round(mean, 6),
            "min_cosine_to_fp32": round(low, 6),
            "query_cosine_to_fp32": round(_cosine(queries, ref_queries)[0], 6),
            "ndcg10": round(ndcg, 4),
            "ndcg_delta": round(ndcg - ref_ndcg, 4),
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ragstream.adapters.embedding import INCOMPATIBLE_SUFFIX, cpu_flags

    data = load_data(args.data, args.passages, args.corpus_docs)
    t0, load_start = time.perf_counter(), os.getloadavg()[0]
    auto = _spawn(args, "auto")
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        out = Path(tmp) / "vectors.npz"
        compared = _spawn(args, "compare", out)
        quality = _quality(data, np.load(out))
    figures: dict[str, dict[str, Any]] = {}
    ref_rate = compared["backends"][REFERENCE]["passages_per_s"]
    for name in BACKENDS:
        speed = compared["backends"][name]
        figures[name] = (
            {
                "speedup": round(speed["passages_per_s"] / ref_rate, 3),
                "auto_may_pick": name not in INCOMPATIBLE_SUFFIX,
            }
            | speed
            | quality[name]
            | _spawn(args, f"rss:{name}")
        )
    workers = {case: _spawn(args, f"build:{case}") for case in WORKERS}
    picked = figures[auto["backend"]]
    subset = len(data.doc_ids) < data.corpus_total
    return {
        "backend": auto["backend"],
        "speedup": picked["speedup"],
        "ndcg_delta": picked["ndcg_delta"],
        "cosine_to_fp32": picked["cosine_to_fp32"],
        "auto": auto,
        "backends": figures,
        "workers": workers,
        "cpu_flags": cpu_flags(),
        "cpus": os.cpu_count(),
        "threads": compared["threads"],
        "batch_size": compared["batch_size"],
        "passages": args.passages,
        "corpus_docs": len(data.doc_ids),
        "corpus_total": data.corpus_total,
        "corpus_subset": subset,
        "corpus_note": SUBSET_NOTE if subset else "full corpus",
        "queries": len(data.query_ids),
        "latency_queries": min(args.latency_queries, len(data.query_ids)),
        "seconds": round(time.perf_counter() - t0, 1),
        # Other processes on the host (1-minute load average, start and end): figures from a busy host are
        # slower and noisier; the interleaving keeps the ratios comparable.
        "loadavg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }


def _worker(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    if mode == "auto":
        return auto_worker()
    if mode.startswith("build:"):
        return build_worker(mode.removeprefix("build:"))
    data = load_data(args.data, args.passages, args.corpus_docs)
    if mode == "compare":
        return compare_worker(data, args.passages, args.latency_queries, args.out)
    return rss_worker(mode.removeprefix("rss:"), data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="BEIR SciFact folder")
    ap.add_argument("--passages", type=int, default=512, help="timed passages (the corpus's first)")
    ap.add_argument("--corpus-docs", type=int, default=1000, help="retrieval corpus size (0: all)")
    ap.add_argument("--latency-queries", type=int, default=100, help="queries embedded one at a time")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # auto | compare | rss:<backend>
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    print(json.dumps(_worker(args.worker, args) if args.worker else run(args)))


if __name__ == "__main__":
    main()
