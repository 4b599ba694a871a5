"""The ingestion and serving chains end to end, in memory: the real handlers from the composition root
(`application.compose.wire`) over `MemoryChunkStore`, `HashEmbedder`, `WhitespaceTokenizer`, `NoReranker`
and `ExtractiveStub`, connected by `MemoryBus` instead of Kafka. No broker, no Weaviate, no model."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import pytest

from application.compose import MODULES, wire
from ragstream.adapters.embedder import HashEmbedder
from ragstream.adapters.llm import ExtractiveStub
from ragstream.adapters.memory_store import MemoryChunkStore
from ragstream.adapters.reranker import NoReranker
from ragstream.core.tokenizer import WhitespaceTokenizer
from ragstream.runtime.deps import Deps, chunking_policy
from ragstream.runtime.memory_bus import MemoryBus
from ragstream.runtime.worker import Outbound, event_key
from ragstream.settings import Settings
from schemas.envelope import utcnow
from schemas.ingestion import (
    Acl,
    AclChanged,
    DocumentChanged,
    DocumentChunked,
    DocumentDeleted,
    DocumentIndexed,
    DocumentNormalized,
)
from schemas.serving import Caller, QueryAnswered, QueryRequested, QueryReranked, QueryRetrieved, QuerySpec
from schemas.topics import (
    ANSWERS,
    DOCUMENTS_CHUNKED,
    DOCUMENTS_NORMALIZED,
    INGEST_RECEIPTS,
    INGESTION,
    QUERIES_REQUESTED,
    QUERIES_RERANKED,
    QUERIES_RETRIEVED,
    SERVING,
    SOURCE_CHANGES,
)

pytestmark = pytest.mark.component

HANDBOOK = """# Handbook

## Cafeteria

The acme cafeteria opens at eight in the morning and closes at three.

## Parking

Parking in the north garage is free for staff on weekends.
"""
STAFF = ("staff",)


@dataclass
class Chain:
    bus: MemoryBus
    store: MemoryChunkStore

    async def upsert(
        self, doc: str, text: str, groups: tuple[str, ...] = STAFF, tenant: str = "acme"
    ) -> None:
        await self.bus.publish(SOURCE_CHANGES.name, changed(doc, text, groups, tenant))
        await self.bus.drain()

    async def ask(
        self, question: str, subject: str, groups: Sequence[str], tenant: str = "acme"
    ) -> list[Any]:
        """Every answer-topic event of one query: its deltas, then its final answer."""
        req = query(question, subject, groups, tenant)
        await self.bus.publish(QUERIES_REQUESTED.name, req)
        await self.bus.drain()
        return [e for e in self.bus.events(ANSWERS.name) if e.query_id == req.query.query_id]

    def receipts(self) -> list[Any]:
        return self.bus.events(INGEST_RECEIPTS.name)


def changed(doc: str, text: str, groups: tuple[str, ...] = STAFF, tenant: str = "acme") -> DocumentChanged:
    return DocumentChanged(
        tenant_id=tenant,
        op="upsert",
        document_id=doc,
        mime_type="text/markdown",
        title=doc.removesuffix(".md").title(),
        acl=Acl(groups=groups),
        content_b64=base64.b64encode(text.encode()).decode(),
    )


def query(question: str, subject: str, groups: Sequence[str], tenant: str = "acme") -> QueryRequested:
    now = utcnow()
    return QueryRequested(
        tenant_id=tenant,
        query=QuerySpec(
            query_id=str(uuid.uuid4()),
            question=question,
            caller=Caller(subject=subject, groups=tuple(groups)),
            deadline_at=now + timedelta(seconds=30),
            requested_at=now,
        ),
    )


@pytest.fixture
def chain() -> Chain:
    return make_chain(Settings())


def make_chain(settings: Settings) -> Chain:
    """Every consumer of the registry, wired by the composition root over in-memory adapters."""
    bus, store = MemoryBus(settings), MemoryChunkStore()
    deps = Deps(
        settings,
        store=store,
        embedder=HashEmbedder(64),
        tokenizer=WhitespaceTokenizer(),
        policy=chunking_policy(settings),
        reranker=NoReranker(),
        llm=ExtractiveStub(),
        # Generation's streamed deltas go onto the bus as the worker's producer would send them.
        send=partial(bus.producer.send_many, wait=False),
    )
    for name in (*INGESTION, *SERVING):
        wired = wire(name, deps, bus.producer)  # type: ignore[arg-type]
        bus.register(MODULES[name].SPEC, wired.handler)
    return Chain(bus, store)


# --- ingestion ----------------------------------------------------------------------------------------


async def test_an_upsert_is_normalized_chunked_and_indexed(chain: Chain) -> None:
    await chain.upsert("handbook.md", HANDBOOK)
    (normalized,) = chain.bus.events(DOCUMENTS_NORMALIZED.name)
    (chunked,) = chain.bus.events(DOCUMENTS_CHUNKED.name)
    (receipt,) = chain.receipts()
    assert isinstance(normalized, DocumentNormalized) and isinstance(chunked, DocumentChunked)
    assert isinstance(receipt, DocumentIndexed) and receipt.document_id == "handbook.md"
    assert receipt.chunk_ids == tuple(c.chunk_id for c in chunked.chunks) and receipt.chunks_written > 0
    assert receipt.causation_id == chunked.event_id and chunked.correlation_id == receipt.correlation_id
    state = chain.store.get_state("acme", "handbook.md")
    assert state is not None and state.chunk_ids == receipt.chunk_ids and state.acl_groups == STAFF
    stored = chain.store.document_chunks("acme", "handbook.md")
    assert "cafeteria opens at eight" in " ".join(c["text"] for c in stored)
    assert chain.store.count("acme") == len(receipt.chunk_ids) and chain.store.count("globex") == 0


async def test_a_replayed_upsert_changes_nothing(chain: Chain) -> None:
    event = changed("handbook.md", HANDBOOK)
    for _ in range(2):
        await chain.bus.publish(SOURCE_CHANGES.name, event)
        await chain.bus.drain()
    first, again = chain.receipts()
    assert not first.unchanged and again.unchanged and again.chunk_ids == first.chunk_ids
    assert chain.store.count("acme") == len(first.chunk_ids)


async def test_a_delete_removes_every_chunk_and_the_state(chain: Chain) -> None:
    await chain.upsert("handbook.md", HANDBOOK)
    indexed = chain.receipts()[0]
    await chain.bus.publish(
        SOURCE_CHANGES.name, DocumentChanged(tenant_id="acme", op="delete", document_id="handbook.md")
    )
    await chain.bus.drain()
    deleted = chain.receipts()[-1]
    assert isinstance(deleted, DocumentDeleted) and deleted.remaining_chunks == 0
    assert set(deleted.removed_chunk_ids) == set(indexed.chunk_ids)
    assert chain.store.get_state("acme", "handbook.md") is None and chain.store.count("acme") == 0
    (answer,) = [
        e
        for e in await chain.ask("When does the cafeteria open?", "alice", STAFF)
        if e.type == "QueryAnswered"
    ]
    assert answer.abstained and not answer.citations


async def test_a_narrowed_acl_takes_effect_without_reembedding(chain: Chain) -> None:
    await chain.upsert("handbook.md", HANDBOOK)
    before = final(await chain.ask("When does the acme cafeteria open?", "alice", STAFF))
    assert not before.abstained and before.citations
    vectors = {cid: chain.store.vector_of("acme", cid) for cid in chain.receipts()[0].chunk_ids}
    await chain.bus.publish(
        SOURCE_CHANGES.name,
        AclChanged(tenant_id="acme", document_id="handbook.md", acl=Acl(groups=("board",))),
    )
    await chain.bus.drain()
    receipt = chain.receipts()[-1]
    assert isinstance(receipt, DocumentIndexed) and receipt.acl_only and receipt.chunks_written == 0
    assert all((chain.store.vector_of("acme", c) == v).all() for c, v in vectors.items()), "same vectors"
    staff = final(await chain.ask("When does the acme cafeteria open?", "alice", STAFF))
    assert staff.abstained and not staff.citations and not staff.context_chunk_ids
    board = final(await chain.ask("When does the acme cafeteria open?", "bob", ("board",)))
    assert not board.abstained and board.citations


# --- serving ------------------------------------------------------------------------------------------


def final(answers: list[Any]) -> QueryAnswered:
    (last,) = [e for e in answers if e.type == "QueryAnswered"]
    assert answers[-1] is last, "the final answer comes after every delta"
    return last


async def test_a_query_is_retrieved_reranked_and_answered_with_citations(chain: Chain) -> None:
    await chain.upsert("handbook.md", HANDBOOK)
    await chain.upsert("menu.md", "# Menu\n\nSoup on Mondays.\n", groups=("everyone",))
    answers = await chain.ask("When does the acme cafeteria open?", "alice", STAFF)
    (retrieved,) = chain.bus.events(QUERIES_RETRIEVED.name)
    (reranked,) = chain.bus.events(QUERIES_RERANKED.name)
    assert isinstance(retrieved, QueryRetrieved) and isinstance(reranked, QueryReranked)
    assert retrieved.passages and {p.document_id for p in retrieved.passages} == {"handbook.md"}
    assert reranked.reranker == "none" and reranked.passages == retrieved.passages[: len(reranked.passages)]
    answer = final(answers)
    assert not answer.abstained and "eight" in answer.answer
    assert "".join(d.text for d in answers if d.type == "AnswerDelta") == answer.answer
    indexed = set(chain.receipts()[0].chunk_ids)
    for c in answer.citations:
        assert (
            c.document_id == "handbook.md"
            and c.chunk_id in indexed
            and c.chunk_id in answer.context_chunk_ids
        )
    assert answer.correlation_id == retrieved.correlation_id == reranked.correlation_id


async def test_a_low_cosine_passage_is_kept_when_it_matches_the_query_words() -> None:
    # A short keyword query embeds far from every passage; its word match is the evidence that counts.
    settings = Settings()
    strict = Settings().model_copy(
        update={"serving": settings.serving.model_copy(update={"min_relevance": 0.99})}
    )
    chain = make_chain(strict)
    await chain.upsert("handbook.md", HANDBOOK)
    await chain.ask("cafeteria", "alice", STAFF)
    await chain.ask("zeppelin quartz", "alice", STAFF)
    matched, unmatched = chain.bus.events(QUERIES_RETRIEVED.name)
    assert matched.passages and {p.document_id for p in matched.passages} == {"handbook.md"}
    assert all(p.relevance is not None and p.relevance < 0.99 for p in matched.passages)
    assert unmatched.passages == ()


async def test_a_caller_without_access_gets_no_passages_and_an_abstention(chain: Chain) -> None:
    await chain.upsert("handbook.md", HANDBOOK)
    answer = final(await chain.ask("When does the acme cafeteria open?", "mallory", ("contractors",)))
    (retrieved,) = chain.bus.events(QUERIES_RETRIEVED.name)
    assert retrieved.passages == ()
    assert answer.abstained and not answer.citations and not answer.context_chunk_ids


async def test_another_tenant_sees_nothing(chain: Chain) -> None:
    await chain.upsert("handbook.md", HANDBOOK)
    answer = final(await chain.ask("When does the acme cafeteria open?", "alice", STAFF, tenant="globex"))
    assert answer.abstained and not answer.citations


# --- dead letters ---------------------------------------------------------------------------------------


async def test_forged_and_undecodable_records_go_to_the_dead_letter_topic(chain: Chain) -> None:
    bus = chain.bus
    bus.publish_raw(QUERIES_REQUESTED.name, b"\x00\x01 not json", key=b"q1")
    forged = query("When does the cafeteria open?", "alice", STAFF).model_dump(mode="json")
    forged["query"]["caller"]["is_admin"] = True  # a field no schema has: refused, never ignored
    bus.publish_raw(QUERIES_REQUESTED.name, json.dumps(forged).encode())
    no_tenant = changed("x.md", "text").model_dump(mode="json", exclude={"tenant_id"})
    bus.publish_raw(SOURCE_CHANGES.name, json.dumps(no_tenant).encode())
    await bus.drain()
    queries = bus.dead_letters(QUERIES_REQUESTED.name)
    assert [d.reason for d in queries] == ["malformed_json", "invalid_payload"]
    assert all(d.stage == "retrieval" and d.original_topic == QUERIES_REQUESTED.name for d in queries)
    assert base64.b64decode(queries[0].original_key_b64 or "") == b"q1"
    assert [d.reason for d in bus.dead_letters(SOURCE_CHANGES.name)] == ["missing_tenant"]
    assert bus.events(QUERIES_RETRIEVED.name) == [] and bus.events(ANSWERS.name) == []


async def test_a_permanent_handler_failure_dead_letters_only_that_record(chain: Chain) -> None:
    bad = DocumentChanged(
        tenant_id="acme", op="upsert", document_id="secret.md", content_uri="file:///etc/passwd"
    )
    # One partition, so both arrive in one batch: the worker's rule is to refuse only the bad record.
    for event in (bad, changed("handbook.md", HANDBOOK)):
        chain.bus.emit(Outbound(SOURCE_CHANGES.name, event_key(event), event, partition=0))
    await chain.bus.drain()
    (dead,) = chain.bus.dead_letters(SOURCE_CHANGES.name)
    assert dead.stage == "normalizer" and dead.reason == "uri_not_allowed" and dead.tenant_id == "acme"
    assert [r.document_id for r in chain.receipts()] == ["handbook.md"], "the good record still went through"
    assert chain.store.get_state("acme", "secret.md") is None
