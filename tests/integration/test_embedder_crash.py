"""SIGKILL the embedder mid-ingest, restart it: exactly the expected chunk set, nothing lost or duplicated."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from producers.publisher import DocumentPublisher
from ragstream.adapters.tokenizer import default_tokenizer
from ragstream.core.chunk import ChunkingPolicy, chunk
from ragstream.core.normalize import normalize
from schemas.ingestion import Acl
from tests.support.pipeline import Harness, eventually, isolated_pipeline_settings

pytestmark = pytest.mark.integration


def _embedder_process(s, log) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        {
            "RAGSTREAM_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
            "RAGSTREAM_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
            "RAGSTREAM_KAFKA__DEFAULT_PARTITIONS": str(s.kafka.default_partitions),
            "RAGSTREAM_INDEX__GENERATION": s.index.generation,
            "RAGSTREAM_INDEX__CONSUMER_BATCH_MAX": "4",
            "RAGSTREAM_WEAVIATE__URL": s.weaviate.url,
            "RAGSTREAM_WEAVIATE__GRPC_PORT": str(s.weaviate.grpc_port),
            "RAGSTREAM_WEAVIATE__API_KEY": s.weaviate.api_key.get_secret_value(),
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "application.cli.main", "worker", "embedder", "--metrics-port", "0"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _documents(n: int) -> dict[str, bytes]:
    return {
        f"doc-{i:02d}.md": (
            f"# Document {i}\n\n"
            + "\n\n".join(
                f"Paragraph {j} of document {i} talks about topic {i * 7 + j} in some detail."
                for j in range(30)
            )
        ).encode()
        for i in range(n)
    }


async def test_sigkill_embedder_mid_ingest(settings, unique, embedder, tmp_path) -> None:
    s = isolated_pipeline_settings(settings, unique)
    docs = _documents(24)
    policy = ChunkingPolicy(
        max_tokens=s.ingest.chunk_max_tokens, overlap_tokens=s.ingest.chunk_overlap_tokens
    )
    expected = set()
    for name, raw in docs.items():
        import hashlib

        version = hashlib.sha256(raw).hexdigest()[:16]
        for c in chunk(
            normalize(raw, "text/markdown"),
            policy,
            default_tokenizer(),
            tenant_id="t1",
            document_id=name,
            source_version=version,
        ):
            expected.add(c.chunk_id)
    log = (tmp_path / "embedder.log").open("wb")
    async with Harness(s, embedder, ("normalizer", "chunker"), tmp=tmp_path) as h:
        proc = _embedder_process(s, log)
        try:
            async with DocumentPublisher(s) as pub:
                for name, raw in docs.items():
                    await pub.upsert(
                        "t1", name, content=raw, mime_type="text/markdown", acl=Acl(groups=("g",))
                    )
            await eventually(lambda: len(h.chunk_ids("t1")) > 0, timeout_s=120, interval=0.05)
            partial = len(h.chunk_ids("t1"))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert partial < len(expected), "the kill must land mid-ingest"
            proc = _embedder_process(s, log)
            await eventually(lambda: h.chunk_ids("t1") == expected, timeout_s=180, interval=0.5)
            await asyncio.sleep(
                2
            )  # anything written late would be a duplicate or a stray: there must be none
            ids = [c["chunk_id"] for c in h.store.iter_chunks("t1")]
            assert len(ids) == len(set(ids)) == len(expected)
            assert set(ids) == expected
            states = h.store.list_states("t1")
            assert len(states) == len(docs) and {st.document_id for st in states} == set(docs)
        finally:
            proc.kill()
            proc.wait(10)
            log.close()
