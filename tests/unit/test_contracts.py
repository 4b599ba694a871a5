"""Event contracts: every registered model round-trips; bad input is a typed error naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from schemas.dlq import DeadLetter
from schemas.errors import EventDecodeError, decode, encode
from schemas.ingestion import (
    Acl,
    AclChanged,
    ChunkPayload,
    DocumentChanged,
    DocumentChunked,
    DocumentDeleted,
    DocumentFacts,
    DocumentIndexed,
    DocumentNormalized,
    DocumentRemoved,
    SectionPayload,
)
from schemas.serving import (
    AnswerDelta,
    Caller,
    Citation,
    Passage,
    QueryAnswered,
    QueryFailed,
    QueryRequested,
    QueryReranked,
    QueryRetrieved,
    QuerySpec,
)
from schemas.topics import CONSUMERS, TOPICS
from schemas.verification import AnswerVerified

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
FACTS = DocumentFacts(
    document_id="doc-1", source_id="s", source_version="v1", owner="o", acl=Acl(groups=("b", "a")), title="T"
)
SPEC = QuerySpec(query_id="q1", question="why?", caller=Caller(subject="u", groups=("g",)), deadline_at=NOW)
PASSAGE = Passage(chunk_id="c", document_id="d", text="x")

SAMPLES = {
    "ragstream.ingest.source-changes.v1": [
        DocumentChanged(
            tenant_id="t1", op="upsert", document_id="d", content_b64="aGk=", acl=Acl(principals=("u",))
        ),
        DocumentChanged(tenant_id="t1", op="delete", document_id="d"),
        AclChanged(tenant_id="t1", document_id="d", acl=Acl(groups=("g",))),
    ],
    "ragstream.ingest.documents-normalized.v1": [
        DocumentNormalized(
            tenant_id="t1",
            facts=FACTS,
            normalizer_version="n1",
            sections=(SectionPayload(heading_path=("A",), text="body"),),
            text_sha256="h",
        ),
        DocumentRemoved(tenant_id="t1", document_id="d"),
        AclChanged(tenant_id="t1", document_id="d", acl=Acl()),
    ],
    "ragstream.ingest.documents-chunked.v1": [
        DocumentChunked(
            tenant_id="t1",
            facts=FACTS,
            normalizer_version="n1",
            policy_hash="p",
            chunks=(ChunkPayload(chunk_id="c", position=0, text="t", token_count=1),),
        ),
    ],
    "ragstream.ingest.receipts.v1": [
        DocumentIndexed(tenant_id="t1", document_id="d", generation="g1", collection="C", chunk_ids=("c",)),
        DocumentDeleted(
            tenant_id="t1", document_id="d", generation="g1", collection="C", removed_chunk_ids=("c",)
        ),
    ],
    "ragstream.query.requested.v1": [QueryRequested(tenant_id="t1", query=SPEC)],
    "ragstream.query.retrieved.v1": [
        QueryRetrieved(tenant_id="t1", query=SPEC, rewritten="why", passages=(PASSAGE,), generation="g1")
    ],
    "ragstream.query.reranked.v1": [
        QueryReranked(tenant_id="t1", query=SPEC, passages=(PASSAGE,), generation="g1", reranker="none")
    ],
    "ragstream.query.answers.v1": [
        AnswerDelta(tenant_id="t1", query_id="q1", seq=0, text="he"),
        QueryAnswered(
            tenant_id="t1",
            query_id="q1",
            subject="u",
            answer="a [1]",
            citations=(Citation(citation_id="1", document_id="d", chunk_id="c"),),
        ),
        QueryFailed(tenant_id="t1", query_id="q1", stage="retrieval", reason="x"),
    ],
    "ragstream.answers.verified.v1": [
        AnswerVerified(
            tenant_id="t1",
            query_id="q1",
            sampled_rate=0.1,
            outcome="unsupported",
            support=0.5,
            supported=False,
            claims=2,
            unsupported_claims=("It opens at nine.",),
        ),
    ],
}


def test_every_topic_has_samples() -> None:
    assert set(SAMPLES) == set(TOPICS)


@pytest.mark.parametrize("topic", sorted(SAMPLES))
def test_round_trip(topic: str) -> None:
    for event in SAMPLES[topic]:
        back = decode(topic, encode(event))
        assert back == event
        assert type(back) is type(event)


def test_dead_letter_round_trip() -> None:
    dl = DeadLetter(
        dead_letter_id="x",
        stage="normalizer",
        consumer_group="g",
        reason="r",
        error_class="E",
        message="m",
        original_topic="t",
        original_partition=0,
        original_offset=5,
        raw_b64="AA==",
        failed_at=NOW,
    )
    assert DeadLetter.model_validate_json(dl.model_dump_json()) == dl


def _raw(event: object) -> dict:
    return json.loads(encode(event))


TOPIC = "ragstream.ingest.source-changes.v1"
GOOD = DocumentChanged(tenant_id="t1", op="upsert", document_id="d", content_b64="aGk=")


def test_malformed_json() -> None:
    with pytest.raises(EventDecodeError) as ei:
        decode(TOPIC, b'{"tenant_id": ')
    assert ei.value.reason == "malformed_json"


def test_json_nested_past_the_parser_stack_is_malformed_not_a_crash() -> None:
    with pytest.raises(EventDecodeError) as ei:
        decode(TOPIC, b"[" * 100_000 + b"]" * 100_000)
    assert ei.value.reason == "malformed_json"


def test_wrong_schema_version_names_field() -> None:
    with pytest.raises(EventDecodeError) as ei:
        decode(TOPIC, json.dumps({**_raw(GOOD), "schema_version": 99}).encode())
    assert ei.value.reason == "unsupported_schema_version"
    assert "schema_version" in ei.value.fields
    assert "schema_version" in str(ei.value)


def test_missing_tenant_names_field() -> None:
    raw = _raw(GOOD)
    del raw["tenant_id"]
    with pytest.raises(EventDecodeError) as ei:
        decode(TOPIC, json.dumps(raw).encode())
    assert ei.value.reason == "missing_tenant"
    assert ei.value.fields == ("tenant_id",)


@pytest.mark.parametrize("tenant", ["", "has space", "a/b", "x" * 65])
def test_invalid_tenant_rejected(tenant: str) -> None:
    with pytest.raises(EventDecodeError) as ei:
        decode(TOPIC, json.dumps({**_raw(GOOD), "tenant_id": tenant}).encode())
    assert "tenant_id" in ei.value.fields


def test_invalid_payload_names_field() -> None:
    with pytest.raises(EventDecodeError) as ei:
        decode(TOPIC, json.dumps({**_raw(GOOD), "op": "explode"}).encode())
    assert ei.value.reason == "invalid_payload"
    assert "op" in ei.value.fields


def test_upsert_requires_content() -> None:
    raw = _raw(GOOD)
    raw["content_b64"] = None
    with pytest.raises(EventDecodeError, match="content"):
        decode(TOPIC, json.dumps(raw).encode())


def test_unknown_field_rejected() -> None:
    with pytest.raises(EventDecodeError) as ei:
        decode(TOPIC, json.dumps({**_raw(GOOD), "surprise": 1}).encode())
    assert "surprise" in ei.value.fields


def test_acl_is_canonical() -> None:
    assert Acl(groups=("b", "a", "b")).groups == ("a", "b")


def test_registry_consistency() -> None:
    groups = [c.group for c in CONSUMERS.values()]
    assert len(groups) == len(set(groups))
    for c in CONSUMERS.values():
        assert c.topic in TOPICS
        assert c.output is None or c.output in TOPICS
        assert all(name.endswith(".v1") for name in TOPICS)
