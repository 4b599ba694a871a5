"""Adapter errors as permanent or transient; limits derived from the record size; dead letters that fit."""

from __future__ import annotations

import hashlib

import httpx
import pytest
import weaviate.exceptions as wexc
from aiokafka import ConsumerRecord

from ragstream.adapters.errors import classify, failure_code, translate
from ragstream.ports import ModelStreamIncompleteError
from ragstream.runtime.errors import PermanentError, TransientError
from ragstream.runtime.limits import DEAD_LETTER_PREFIX_MAX, HEADROOM_BYTES, Limits
from ragstream.runtime.worker import Worker
from ragstream.settings import KafkaSettings, Settings
from schemas.ingestion import INLINE_CONTENT_MAX_BYTES
from schemas.topics import CONSUMERS

pytestmark = pytest.mark.unit


def _http(status: int) -> httpx.HTTPStatusError:
    req = httpx.Request("POST", "http://model/v1/chat/completions")
    return httpx.HTTPStatusError("x", request=req, response=httpx.Response(status, request=req))


def _weaviate_status(status: int) -> wexc.UnexpectedStatusCodeError:
    req = httpx.Request("POST", "http://weaviate/v1/objects")
    return wexc.UnexpectedStatusCodeError("write", httpx.Response(status, request=req, json={"error": []}))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_weaviate_status(422), "permanent"),
        (_weaviate_status(400), "permanent"),
        (_weaviate_status(404), "permanent"),
        (_weaviate_status(429), "transient"),
        (_weaviate_status(500), "transient"),
        (_weaviate_status(503), "transient"),
        (wexc.WeaviateConnectionError("refused"), "transient"),
        (wexc.WeaviateTimeoutError("slow"), "transient"),
        (
            wexc.WeaviateQueryError(
                "<AioRpcError of RPC that terminated with: StatusCode.UNAVAILABLE>", "GRPC"
            ),
            "transient",
        ),
        (wexc.WeaviateQueryError("StatusCode.INVALID_ARGUMENT: bad filter", "GRPC"), "permanent"),
        (
            wexc.WeaviateQueryError(
                "vector search: knn search: distance between entrypoint and query node: 8 vs 3", "GRPC"
            ),
            "permanent",
        ),
        (wexc.WeaviateQueryError("context deadline exceeded", "GRPC"), "transient"),
        # A Weaviate node restarting (bench.chaos): no replica to route to, shards closing.
        (wexc.WeaviateQueryError("object search at index x: no read replica found.", "GRPC"), "transient"),
        (wexc.WeaviateBatchError("weaviate rejected 3 chunk writes: no write replica found"), "transient"),
        (wexc.WeaviateBatchError("weaviate rejected 1 chunk writes: shard shutdown"), "transient"),
        # ... and starting, before its schema and indexes are loaded.
        (
            wexc.WeaviateQueryError("search failed: could not find class RagDocs_g1 in schema.", "GRPC"),
            "transient",
        ),
        (
            wexc.WeaviateQueryError("search: tried to browse non-existing index for RagChunks_g1", "GRPC"),
            "transient",
        ),
        (
            wexc.WeaviateBatchError('weaviate rejected 2 chunk writes: class "RagChunks_g1" not found'),
            "transient",
        ),
        (
            wexc.WeaviateQueryError("no such prop with name 'x' found in class 'RagChunks_g1'", "GRPC"),
            "permanent",
        ),
        (_http(400), "permanent"),
        (_http(408), "transient"),
        (_http(429), "transient"),
        (_http(502), "transient"),
        (httpx.ConnectError("refused"), "transient"),
        (httpx.RemoteProtocolError("peer closed connection"), "transient"),
        (ConnectionResetError(), "transient"),
        (ValueError("a bug"), None),
    ],
)
def test_every_adapter_error_has_a_class(exc: BaseException, expected: str | None) -> None:
    assert classify(exc) == expected


def test_translate_gives_the_worker_its_error() -> None:
    perm = translate(_weaviate_status(422), "weaviate")
    assert isinstance(perm, PermanentError) and perm.reason == "weaviate_rejected"
    assert isinstance(translate(_weaviate_status(503), "weaviate"), TransientError)
    bug = ValueError("a bug")
    assert translate(bug, "weaviate") is bug  # unknown errors keep their type: the worker's ladder decides


def test_failure_codes_name_what_broke() -> None:
    assert failure_code(ModelStreamIncompleteError("cut")) == "model_stream_incomplete"
    assert failure_code(_http(400)) == "model_rejected"
    assert failure_code(_http(503)) == "model_unavailable"
    assert failure_code(httpx.ReadTimeout("slow")) == "model_unavailable"
    assert failure_code(wexc.WeaviateConnectionError("down")) == "store_unavailable"
    assert failure_code(KeyError("x")) == "internal"


def test_limits_follow_the_record_size() -> None:
    big = Limits(16_000_000, 20_000_000)
    assert big.payload_bytes == 16_000_000 - HEADROOM_BYTES
    assert big.document_bytes < 16_000_000  # the 20 MB setting cannot outgrow a record
    assert big.inline_content_bytes == INLINE_CONTENT_MAX_BYTES
    assert big.dead_letter_prefix_bytes == DEAD_LETTER_PREFIX_MAX
    small = Limits(1_000_000, 20_000_000)
    assert small.inline_content_bytes == (1_000_000 - HEADROOM_BYTES) * 3 // 4
    assert small.document_bytes == (1_000_000 - HEADROOM_BYTES) // 2
    assert small.fits(b"x" * small.payload_bytes) and not small.fits(b"x" * (small.payload_bytes + 1))
    assert Limits(16_000_000, 1000).document_bytes == 1000  # a smaller setting wins


async def test_a_dead_letter_of_a_huge_record_always_fits() -> None:
    s = Settings(kafka=KafkaSettings(max_message_bytes=1_000_000))
    worker = Worker(CONSUMERS["normalizer"], _never, s, group="g")
    raw = b"\xff" * 12_500_000  # invalid JSON and UTF-8, larger than any record
    rec = ConsumerRecord(
        topic="t",
        partition=0,
        offset=19,
        timestamp=0,
        timestamp_type=0,
        key=b"k" * 5000,
        value=raw,
        checksum=None,
        serialized_key_size=5000,
        serialized_value_size=len(raw),
        headers=[(f"h{i}", b"v" * 5000) for i in range(100)],
    )
    dead = worker._dead_letter(rec, "malformed_json", ValueError("x" * 10_000), None)
    encoded = dead.model_dump_json().encode()
    assert worker.limits.fits(encoded) and len(encoded) < 200_000
    assert dead.raw_truncated and dead.raw_length == len(raw)
    assert dead.raw_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(dead.original_headers) <= 32 and dead.original_offset == 19


async def _never(items: list) -> list:  # a handler the dead-letter test never calls
    raise AssertionError
