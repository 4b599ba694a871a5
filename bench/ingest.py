"""Ingestion benchmark on the running local stack (`ragstream stack up`).

1. Throughput ratio, on the same chunks: end-to-end chunks/s (publish -> normalize -> chunk -> embed ->
   Weaviate, receipts back) divided by raw encode chunks/s of the same embedder on its chosen backend
   (one `embed` call over all chunks, timed before and after the end-to-end run; their mean). Target >= 0.9.
2. Freshness at half of the measured capacity: page-sized edits, first a burst to measure their capacity,
   then new ones published at 50% of it;
   publish -> searchable (receipt) p50/p95. Target p95 <= 2 s.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import time
from pathlib import Path

from application.pipeline import LocalPipeline
from bench.common import cleanup, isolated_settings, quantile_fields
from producers.publisher import DocumentPublisher
from producers.receipts import ReceiptWatcher
from ragstream.adapters.embedder import SentenceTransformerEmbedder
from ragstream.adapters.tokenizer import default_tokenizer
from ragstream.core.chunk import ChunkingPolicy, chunk
from ragstream.core.normalize import detect_mime, normalize
from ragstream.indexing.indexer import embed_text
from ragstream.runtime.deps import Deps
from ragstream.runtime.kafka_admin import desired_topics, ensure_topics
from schemas.ingestion import Acl
from schemas.topics import INGESTION

FAQ = Path("/usr/share/doc/debian/FAQ")


def corpus(limit: int) -> list[tuple[str, bytes]]:
    docs = [(p.name, p.read_bytes()) for p in sorted(FAQ.glob("*.en.html"))]
    docs.append(("debian-faq.txt", gzip.decompress((FAQ / "debian-faq.en.txt.gz").read_bytes())))
    ref = Path("/usr/share/debian-reference")
    docs += [(p.name, p.read_bytes()) for p in sorted(ref.glob("ch0*.en.html"))]
    return docs[:limit]


def _edit(i: int, doc: tuple[str, bytes], tag: str) -> tuple[str, bytes]:
    """A page-sized plain-text document cut from a corpus document (unique per i: never a no-op)."""
    name, raw = doc
    text = normalize(raw, detect_mime(name, raw)).text[:3000]
    return f"{tag}-{i}-{name}.txt", f"Edit {tag} {i}.\n\n{text}".encode()


def chunk_texts(docs: list[tuple[str, bytes]], policy: ChunkingPolicy) -> list[str]:
    """The exact texts the embedder will embed, built the same way the pipeline builds them."""
    texts = []
    for name, raw in docs:
        doc = normalize(raw, detect_mime(name, raw))
        for c in chunk(doc, policy, default_tokenizer(), tenant_id="b", document_id=name, source_version="v"):
            texts.append(embed_text(doc.title, c.text, c.heading_path))
    return texts


def _raw_rate(embedder: SentenceTransformerEmbedder, texts: list[str]) -> float:
    """Chunks/s of one `model.encode` call over every chunk (the embedder's own batching)."""
    t = time.perf_counter()
    embedder.embed(texts)
    return len(texts) / (time.perf_counter() - t)


async def run(limit: int, fresh_docs: int) -> dict[str, object]:
    s = isolated_settings()
    await ensure_topics(s.kafka, desired_topics(s.kafka))
    docs = corpus(limit)
    policy = ChunkingPolicy(
        max_tokens=s.ingest.chunk_max_tokens, overlap_tokens=s.ingest.chunk_overlap_tokens
    )
    embedder = SentenceTransformerEmbedder(s.embedding, s.index.embedding_batch_size)
    texts = chunk_texts(docs, policy)
    embedder.embed(texts[:64])  # warm-up
    raw_before = _raw_rate(embedder, texts)

    pipeline = await LocalPipeline(s, INGESTION, Deps(s, embedder=embedder)).start()
    watcher = ReceiptWatcher(s)
    await watcher.start()
    # Steady state only: the consumers' first group join is start-up, not throughput.
    for _ in range(600):
        if all(w.consumer.assignment() for w in pipeline.workers.values()):
            break
        await asyncio.sleep(0.1)
    try:
        sent: dict[str, float] = {}
        t0 = time.perf_counter()
        async with DocumentPublisher(s) as pub:
            for name, raw in docs:
                ev = await pub.upsert(
                    "bench",
                    name,
                    content=raw,
                    mime_type=detect_mime(name, raw),
                    acl=Acl(groups=("everyone",)),
                )
                sent[ev.correlation_id] = time.monotonic()
        receipts = await watcher.wait_for(sent, 900)
        e2e_s = time.perf_counter() - t0
        written = sum(getattr(r, "chunks_written", 0) for r in receipts.values())
        e2e_cps = written / e2e_s
        docs_per_s = len(receipts) / e2e_s
        # Raw encode again right after (A-B-A): the reference is the mean of both, so a change in the
        # machine's speed during the run (a shared host) does not land on one side of the ratio.
        raw_after = _raw_rate(embedder, texts)
        raw_cps = (raw_before + raw_after) / 2

        # Freshness at half capacity, on typical edits (a page of text, a few chunks each): first their
        # capacity (a burst, all at once), then a fresh set paced at half of it.
        burst = [_edit(i, docs[i % len(docs)], "cap") for i in range(fresh_docs)]
        t1 = time.perf_counter()
        cap_sent: dict[str, float] = {}
        async with DocumentPublisher(s) as pub:
            for name, raw in burst:
                ev = await pub.upsert(
                    "bench-fresh", name, content=raw, mime_type="text/plain", acl=Acl(groups=("everyone",))
                )
                cap_sent[ev.correlation_id] = time.monotonic()
        await watcher.wait_for(cap_sent, 600)
        edit_capacity = len(burst) / (time.perf_counter() - t1)
        rate = 0.5 * edit_capacity
        per_edit = len(chunk_texts(burst[:5], policy)) / 5
        fresh: dict[str, float] = {}
        async with DocumentPublisher(s) as pub:
            for name, raw in (_edit(i, docs[i % len(docs)], "fresh") for i in range(fresh_docs)):
                ev = await pub.upsert(
                    "bench-fresh", name, content=raw, mime_type="text/plain", acl=Acl(groups=("everyone",))
                )
                fresh[ev.correlation_id] = time.monotonic()
                await asyncio.sleep(1 / rate)
        got = await watcher.wait_for(fresh, 300)
        # From the events' own clocks (same host): the change's publish time to its receipt, which the
        # embedder emits once the chunks are written. Timing by when this loop reads the receipts would add
        # the rest of the publishing loop to every early document.
        lat = [
            (r.occurred_at - r.source_occurred_at).total_seconds()
            for r in got.values()
            if r.source_occurred_at is not None
        ]
    finally:
        await watcher.stop()
        await pipeline.stop()
        await cleanup(s)
    assert written == len(texts), f"pipeline wrote {written} chunks, expected {len(texts)}"
    return {
        # The backend both sides of the ratio ran on (the `auto` pick unless configured): the numerator's
        # pipeline embeds with this very embedder object, the denominator is its own `embed`.
        "backend": embedder.backend,
        "documents": len(docs),
        "chunks": len(texts),
        "raw_encode_chunks_per_s": round(raw_cps, 1),
        "raw_encode_before_after": [round(raw_before, 1), round(raw_after, 1)],
        "e2e_chunks_per_s": round(e2e_cps, 1),
        "throughput_ratio": round(e2e_cps / raw_cps, 3),
        "e2e_documents_per_s": round(docs_per_s, 2),
        "edit_capacity_docs_per_s": round(edit_capacity, 2),
        "fresh_rate_docs_per_s": round(rate, 2),
        "fresh_chunks_per_document": round(per_edit, 1),
        "fresh_documents": len(got),
        **quantile_fields("freshness", lat, unit="s", digits=3),
        "targets": {"throughput_ratio": 0.9, "freshness_p95_s": 2.0},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--documents", type=int, default=40)
    ap.add_argument("--fresh-documents", type=int, default=30)
    args = ap.parse_args()
    result = asyncio.run(run(args.documents, args.fresh_documents))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
