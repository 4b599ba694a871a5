"""Fuzz benchmark: bad events on every consumer's input topic must each become a dead letter with a reason,
while the good events around them are indexed; no consumer crashes, no partition stays behind.

On the running local stack (`ragstream stack up`), under an isolated topic prefix and index generation
(nothing is restarted): the six consumers of schemas.topics.CONSUMERS run in this process with their
production handlers and the worker runtime (`application.compose.wire`), the generation consumer with the
extractive stub model (the model is not under test here; its failures are bench.chaos's and the
integration tests' business).

Bad events (`--events`, spread over the six input topics, interleaved with good ones) are made from each
topic's own JSON Schema (schemas/generated/*.schema.json: wrong JSON types, missing required fields, extra
fields where additionalProperties is false, violated const/enum/pattern/length/format, at any depth) and
by mutation of valid events: huge strings, invalid UTF-8, wrong schema versions, malformed tenants, records
up to the topic's 16 MB limit, values that look like truncated gzip/zstd frames, non-objects, malformed
and deeply nested JSON, another topic's event type, content a handler must refuse (not base64, a corrupt
PDF, empty, a file:// outside the content roots, a chunk id that is not a UUID), and forged headers and
keys. Every decode-level mutation is checked locally to be undecodable before it is sent, so "bad" is
exact. Records over the topic's limit are sent too: the broker refuses them (`refused_by_broker`), so no
consumer ever sees them and they are not counted in `bad_sent`.

Also sent, and reported apart from the bad ones because they are valid events: unknown tenants (deletes
and ACL changes of documents nobody indexed, queries of a tenant with no data) and odd queries (a deadline
already past, top_k 0 or huge). They must be handled without harm: an answer or a failure for each query,
no dead letter needed, and no Weaviate tenant created for a tenant that never had data.

A bad event counts as dead-lettered when a dead letter names its topic, partition and offset (or, for one
refused further down the pipeline, carries its event id in the kept prefix). `stuck_partitions`: input
partitions whose group lag is not 0 within `--settle-s` (60) of the last send. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import gzip
import hashlib
import json
import logging
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiokafka.codec import zstd_encode

from application.compose import Wired, shared_embedder, wire, worker_for
from bench.common import cleanup, exit_on_sigterm, isolated_settings
from ragstream.adapters.llm import ExtractiveStub
from ragstream.adapters.store import open_store
from ragstream.adapters.tokenizer import HFTokenizer
from ragstream.indexing.transforms import to_chunked, to_normalized
from ragstream.runtime import kafka
from ragstream.runtime.deps import Deps, chunking_policy
from ragstream.runtime.kafka_admin import desired_topics, ensure_topics, group_id, partitions_of
from ragstream.runtime.limits import Limits
from ragstream.runtime.offsets import LagReader
from ragstream.runtime.worker import Producer, Worker
from ragstream.settings import Settings
from schemas.dlq import DeadLetter
from schemas.envelope import utcnow
from schemas.errors import EventDecodeError, decode
from schemas.ingestion import (
    Acl,
    AclChanged,
    DocumentChanged,
    DocumentChunked,
    DocumentRemoved,
)
from schemas.serving import (
    Caller,
    Passage,
    QueryAnswered,
    QueryFailed,
    QueryRequested,
    QueryReranked,
    QueryRetrieved,
    QuerySpec,
)
from schemas.topics import (
    ANSWERS,
    CONSUMERS,
    DOCUMENTS_CHUNKED,
    DOCUMENTS_NORMALIZED,
    QUERIES_REQUESTED,
    QUERIES_RETRIEVED,
    SOURCE_CHANGES,
    TOPICS,
)

log = logging.getLogger("bench.fuzz")
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "generated"
INPUTS: tuple[str, ...] = tuple(dict.fromkeys(c.topic for c in CONSUMERS.values()))
GOOD_TENANT = "fuzzgood"
BAD_TENANT = "fuzzbad"
TOPIC_LIMIT = 16_000_000  # the topics' max.message.bytes (ragstream.runtime.kafka_admin)
# Record sizes around the topic's limit: up to it (delivered, dead-lettered) and over it (refused).
UNDER_LIMIT = (1_000_000, 4_000_000, 8_000_000, 12_500_000, TOPIC_LIMIT - 20_000)
OVER_LIMIT = (TOPIC_LIMIT + 100_000, 20_000_000)
# Wrong JSON values by the JSON type they are; a mutation picks one whose type the schema does not allow
# (never a bool for a number, nor a number for a date-time: pydantic's lax mode accepts both).
WRONG_VALUES: tuple[tuple[str, Any], ...] = (
    ("object", {"fuzz": True}),
    ("array", [1, 2, 3]),
    ("string", "fuzz-not-this-type"),
    ("integer", 987654321),
    ("number", 1.5),
    ("null", None),
)
WORDS = ("partition", "offset", "replica", "tenant", "chunk", "vector", "schema", "retry", "ledger", "quorum")
DEEP = 100_000  # nesting levels past any JSON parser's recursion limit


# --- valid events -------------------------------------------------------------------------------------------


class Valid:
    """Valid events of each input topic, built with the pipeline's own transforms."""

    def __init__(self, s: Settings, rng: random.Random) -> None:
        self.rng = rng
        self.policy = chunking_policy(s)
        self.tokenizer = HFTokenizer()
        self.max_bytes = Limits.of(s).document_bytes
        self.n = 0

    def _id(self, kind: str) -> str:
        self.n += 1
        return f"{kind}-{self.n:06d}"

    def text(self) -> bytes:
        words = self.rng.choices(WORDS, k=self.rng.randint(12, 40))
        return (" ".join(words) + f" {uuid.uuid4()}.").encode()

    def changed(self, tenant: str, doc: str | None = None, content: bytes | None = None) -> DocumentChanged:
        raw = content if content is not None else self.text()
        sha = hashlib.sha256(raw).hexdigest()
        return DocumentChanged(
            tenant_id=tenant,
            op="upsert",
            document_id=doc or self._id("doc"),
            producer="bench.fuzz",
            content_b64=base64.b64encode(raw).decode(),
            acl=Acl(groups=("everyone",)),
            source_version=sha[:16],
            content_sha256=sha,
            size_bytes=len(raw),
        )

    def normalized(self, tenant: str, doc: str | None = None) -> Any:
        ev = self.changed(tenant, doc)
        return to_normalized(ev, ev.inline_content() or b"", self.max_bytes)

    def chunked(self, tenant: str, doc: str | None = None) -> DocumentChunked:
        return to_chunked(self.normalized(tenant, doc), self.policy, self.tokenizer)

    def spec(self, question: str = "what is a partition offset?", **changes: Any) -> QuerySpec:
        base = QuerySpec(
            query_id=self._id("q"),
            question=question,
            caller=Caller(subject="fuzz-user", groups=("everyone",), auth_method="internal"),
            deadline_at=utcnow() + timedelta(minutes=10),
        )
        return base.model_copy(update=changes)

    def passage(self) -> Passage:
        return Passage(
            chunk_id=str(uuid.uuid4()),
            document_id=self._id("doc"),
            text=self.text().decode(),
            acl_groups=("everyone",),
        )

    def of(self, topic: str, tenant: str) -> Any:
        """A valid event of `topic` (any of its union's members)."""
        doc = self._id("doc")
        pick = self.rng.random()
        if topic == SOURCE_CHANGES.name:
            if pick < 0.6:
                return self.changed(tenant, doc)
            if pick < 0.8:
                return DocumentChanged(tenant_id=tenant, op="delete", document_id=doc)
            return AclChanged(tenant_id=tenant, document_id=doc, acl=Acl(principals=("p",)))
        if topic in (DOCUMENTS_NORMALIZED.name, DOCUMENTS_CHUNKED.name):
            if pick < 0.6:
                return (
                    self.normalized(tenant, doc)
                    if topic == DOCUMENTS_NORMALIZED.name
                    else self.chunked(tenant, doc)
                )
            if pick < 0.8:
                return DocumentRemoved(tenant_id=tenant, document_id=doc)
            return AclChanged(tenant_id=tenant, document_id=doc, acl=Acl(groups=("g",)))
        if topic == QUERIES_REQUESTED.name:
            return QueryRequested(tenant_id=tenant, query=self.spec())
        passages = tuple(self.passage() for _ in range(self.rng.randint(0, 3)))
        if topic == QUERIES_RETRIEVED.name:
            q = self.spec()
            return QueryRetrieved(
                tenant_id=tenant, query=q, rewritten=q.question, passages=passages, generation="g"
            )
        return QueryReranked(
            tenant_id=tenant, query=self.spec(), passages=passages, generation="g", reranker="none"
        )


# --- schema-driven mutation ---------------------------------------------------------------------------------


def load_schema(topic: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{topic}.schema.json").read_text())


@dataclass(frozen=True)
class Site:
    """One property of an instance: its path and its (resolved) schema."""

    path: tuple[str | int, ...]
    schema: dict[str, Any]
    required: bool
    closed_parent: bool


def resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref, and pick the object variant of an anyOf with null (Optional[Model])."""
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def types_of(schema: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    schema = resolve(schema, defs)
    if "anyOf" in schema:
        return set().union(*(types_of(s, defs) for s in schema["anyOf"]))
    t = schema.get("type")
    found = {t} if isinstance(t, str) else set(t or ())
    if "number" in found:
        found.add("integer")
    if "properties" in schema or "additionalProperties" in schema:
        found.add("object")
    return found or {"any"}


def object_variant(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any] | None:
    schema = resolve(schema, defs)
    if "properties" in schema:
        return schema
    for option in schema.get("anyOf", ()):
        found = object_variant(option, defs)
        if found is not None:
            return found
    return None


def sites(
    schema: dict[str, Any], defs: dict[str, Any], instance: Any, at: tuple[Any, ...] = ()
) -> Iterator[Site]:
    """Every property of `instance` the schema describes, at any depth (first element of arrays)."""
    obj = object_variant(schema, defs)
    if obj is None or not isinstance(instance, dict):
        return
    required = set(obj.get("required", ()))
    closed = obj.get("additionalProperties") is False
    for key, prop in obj.get("properties", {}).items():
        path = (*at, key)
        yield Site(path, resolve(prop, defs), key in required or key == "type", closed)
        value = instance.get(key)
        if isinstance(value, dict):
            yield from sites(prop, defs, value, path)
        items = resolve(prop, defs).get("items")
        if isinstance(value, list) and value and isinstance(items, dict):
            yield from sites(items, defs, value[0], (*path, 0))


def _set(instance: Any, path: Sequence[Any], value: Any) -> None:
    for p in path[:-1]:
        instance = instance[p]
    instance[path[-1]] = value


def _delete(instance: Any, path: Sequence[Any]) -> None:
    for p in path[:-1]:
        instance = instance[p]
    instance.pop(path[-1], None)


def _parent(instance: Any, path: Sequence[Any]) -> Any:
    for p in path[:-1]:
        instance = instance[p]
    return instance


def wrong_type(site: Site, defs: dict[str, Any], rng: random.Random) -> Any:
    allowed = types_of(site.schema, defs)
    dated = site.schema.get("format") == "date-time" or any(
        s.get("format") == "date-time" for s in site.schema.get("anyOf", ())
    )
    options = [
        v
        for t, v in WRONG_VALUES
        if t not in allowed and not (dated and t in ("integer", "number")) and "any" not in allowed
    ]
    return copy.deepcopy(rng.choice(options)) if options else None


def violated(site: Site, rng: random.Random) -> Any | None:
    """A value of the right type that breaks the property's constraint, if it has one."""
    s = site.schema
    if "const" in s:
        return f"Not{s['const']}"
    if "enum" in s:
        return "fuzz-not-in-enum"
    if "pattern" in s:
        return rng.choice(["", "-leading-dash", "has space", "slash/inside", "über", "x" * 65, "../etc"])
    if "maxLength" in s:
        return "x" * (int(s["maxLength"]) + 1)
    if s.get("minLength"):
        return ""
    if s.get("format") == "date-time":
        return rng.choice(["yesterday", "2026-13-45T99:00:00Z", "2026-01-01T00:00:00"])  # last: no zone
    return None


def schema_mutation(kind: str, event: dict[str, Any], schema: dict[str, Any], rng: random.Random) -> bool:
    """Mutate `event` in place by `kind`; False when this event has no site for it."""
    defs = schema.get("$defs", {})
    member = defs.get(event.get("type", ""), schema)
    found = list(sites(member, defs, event))
    if kind == "wrong_type":
        candidates = [
            s for s in found if wrong_type(s, defs, rng) is not None or "null" not in types_of(s.schema, defs)
        ]
        if not candidates:
            return False
        site = rng.choice(candidates)
        _set(event, site.path, wrong_type(site, defs, rng))
        return True
    if kind == "missing_field":
        candidates = [s for s in found if s.required and isinstance(_parent(event, s.path), dict)]
        if not candidates:
            return False
        _delete(event, rng.choice(candidates).path)
        return True
    if kind == "extra_field":
        closed = [s.path[:-1] for s in found if s.closed_parent]
        target = rng.choice(closed) if closed else ()
        holder = event
        for p in target:
            holder = holder[p]
        holder[f"fuzz_extra_{rng.randint(0, 999)}"] = rng.choice([1, "x", None, [1], {"a": 1}])
        return True
    if kind == "constraint":
        candidates = [(s, v) for s in found if (v := violated(s, rng)) is not None]
        if not candidates:
            return False
        site, value = rng.choice(candidates)
        _set(event, site.path, value)
        return True
    raise ValueError(kind)


# --- one bad (or odd, or good) record -----------------------------------------------------------------------


@dataclass
class Item:
    topic: str
    value: bytes | None
    category: str  # bad: the mutation; odd: "valid:<what>"; good: "good"
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    marker: str = ""  # the event id, when the value still carries one
    good_doc: tuple[str, str] | None = None  # (document id, version) a good event must leave indexed
    query_id: str | None = None  # a valid query that must be answered or failed
    # Sent: where it landed (or why the broker refused it).
    partition: int = -1
    offset: int = -1
    refused: str = ""

    @property
    def bad(self) -> bool:
        return self.category not in ("good",) and not self.category.startswith("valid:")


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _dump(ev: Any) -> dict[str, Any]:
    return json.loads(ev.model_dump_json())


def forged_headers(rng: random.Random) -> list[tuple[str, bytes]]:
    picks: list[list[tuple[str, bytes]]] = [
        [("traceparent", b"00-zzzz-not-a-trace-01"), ("tracestate", b"\xff\xfe" * 50)],
        [("traceparent", b"00-" + b"f" * 32 + b"-" + b"0" * 16 + b"-01")],  # all-zero span id: invalid
        [(f"x-fuzz-{i}", bytes(rng.getrandbits(8) for _ in range(64))) for i in range(64)],
        [("event-type", b"QueryAnswered"), ("x-dead-letter", b"already"), ("content-encoding", b"gzip")],
        [("x-huge", b"h" * 100_000)],
        [("", b""), ("baggage", b"k=" + b"v" * 10_000)],
    ]
    return rng.choice(picks)


class Maker:
    """The bad events of one topic, by category, from a valid event of that topic."""

    def __init__(self, valid: Valid, rng: random.Random) -> None:
        self.valid = valid
        self.rng = rng
        self.schemas = {t: load_schema(t) for t in INPUTS}

    def _base(self, topic: str) -> dict[str, Any]:
        ev = _dump(self.valid.of(topic, BAD_TENANT))
        ev["event_id"] = f"fuzz-{uuid.uuid4()}"
        return ev

    def _undecodable(self, topic: str, value: bytes | None) -> bool:
        try:
            decode(topic, value or b"")
        except EventDecodeError:
            return True
        return False

    def make(self, topic: str, category: str) -> Item:
        """A record of `category` that the topic's decoder refuses (checked here, retried until it does)."""
        for _ in range(50):
            item = self._make(topic, category)
            if category == "handler_rejects" or self._undecodable(topic, item.value):
                return item
        raise RuntimeError(f"no undecodable {category} for {topic}")

    def _make(self, topic: str, category: str) -> Item:
        rng = self.rng
        ev = self._base(topic)
        marker = ev["event_id"]
        value: bytes | None
        if category in ("wrong_type", "missing_field", "extra_field", "constraint"):
            if not schema_mutation(category, ev, self.schemas[topic], rng):
                schema_mutation("extra_field", ev, self.schemas[topic], rng)
            value = _json(ev)
        elif category == "huge_string":
            field_name = rng.choice(
                ["tenant_id", "type", "document_id" if "document_id" in ev else "tenant_id"]
            )
            # Mostly tens of kilobytes, a few megabytes (10,000 events must not be gigabytes).
            ev[field_name] = "Z" * rng.choices([600, 20_000, 70_000, 2_000_000], weights=[40, 40, 15, 5])[0]
            value = _json(ev)
        elif category == "invalid_utf8":
            raw = _json(ev)
            cut = raw.index(b'"event_id"') + 12
            value = raw[:cut] + rng.choice([b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80"]) + raw[cut:]
        elif category == "schema_version":
            ev["schema_version"] = rng.choice([0, 2, 3, 999, -1])
            value = _json(ev)
        elif category == "bad_tenant":
            ev["tenant_id"] = rng.choice(["", "-x", "a b", "t/../x", "ü-tenant", "T" * 65, "a.b", "\u0000"])
            value = _json(ev)
        elif category == "compression_frame":
            value, marker = self._frame(ev), ""
        elif category == "not_object":
            value, marker = (
                rng.choice([b"[]", b'"a string"', b"42", b"null", b"true", b"", None, b"[{}]"]),
                "",
            )
        elif category == "malformed_json":
            value = self._malformed(ev)
            marker = ""
        elif category == "wrong_event_type":
            other = rng.choice([t for t in INPUTS if t != topic])
            ev = self._base(other)
            marker = ev["event_id"]
            if rng.random() < 0.3:
                ev["type"] = rng.choice(["DocumentExploded", "", "documentchanged", "DeadLetter"])
            value = _json(ev)
        elif category == "handler_rejects":
            return self._rejected(topic)
        else:
            raise ValueError(category)
        # A tombstone (no value) needs a key: Kafka has no record with neither.
        key = self._key(topic) if value is not None else b"fuzz/tombstone"
        return Item(topic, value, category, key=key, marker=marker)

    def _key(self, topic: str) -> bytes | None:
        roll = self.rng.random()
        if roll < 0.1:
            # No key, except on the compacted topic, whose broker refuses the whole batch around one.
            return b"" if TOPICS[topic].compacted else None
        if roll < 0.15:
            return b"k" * 100_000  # forged: huge key
        return f"{BAD_TENANT}/{uuid.uuid4()}".encode()

    def _frame(self, ev: dict[str, Any]) -> bytes:
        body = _json(ev)
        rng = self.rng
        kind = rng.choice(["gzip", "gzip-truncated", "zstd-truncated", "zstd-header", "gzip-header"])
        if kind == "gzip":
            return gzip.compress(body)  # a whole frame: values are never decompressed by the consumer
        if kind == "gzip-truncated":
            frame = gzip.compress(body)
            return frame[: rng.randint(10, max(11, len(frame) - 8))]
        if kind == "gzip-header":
            return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
        frame = zstd_encode(body)  # the codec aiokafka compresses batches with
        if kind == "zstd-header":
            return frame[:6]
        return frame[: rng.randint(5, max(6, len(frame) - 4))]

    def _malformed(self, ev: dict[str, Any]) -> bytes:
        raw = _json(ev)
        return self.rng.choice(
            [
                raw[: self.rng.randint(1, len(raw) - 1)],  # truncated
                raw + b"}garbage",
                raw.replace(b":", b"=", 1),
                b'{"tenant_id": NaN, "x": Infinity}',
                b"[" * DEEP + b"]" * DEEP,  # nesting past the parser's recursion limit
                b'{"a":' * DEEP + b"1" + b"}" * DEEP,
                b"\x00" * 64,
                b"\xef\xbb\xbf" + raw,  # a UTF-8 byte order mark before the object
            ]
        )

    def _rejected(self, topic: str) -> Item:
        """A decodable event its consumer must refuse (content or ids that can never work)."""
        v, rng = self.valid, self.rng
        if topic == DOCUMENTS_CHUNKED.name:
            ev: Any = v.chunked(BAD_TENANT)
            bad = ev.chunks[0].model_copy(update={"chunk_id": "not-a-uuid"})
            ev = ev.model_copy(update={"chunks": (bad, *ev.chunks[1:])})
        elif topic == SOURCE_CHANGES.name:
            base = v.changed(BAD_TENANT)
            ev = base.model_copy(
                update=rng.choice(
                    [
                        {"content_b64": "!!! not base64 !!!"},
                        {
                            "mime_type": "application/pdf",
                            "content_b64": base64.b64encode(b"%PDF-1.7 garbage").decode(),
                        },
                        {"content_b64": ""},
                        {"content_b64": None, "content_uri": "file:///etc/passwd"},
                        {"mime_type": "application/x-fuzz-unknown"},
                    ]
                )
            )
        else:  # no handler-level refusal on this topic: an undecodable one instead
            return self.make(topic, "constraint")
        return Item(
            topic, ev.model_dump_json().encode(), "handler_rejects", key=self._key(topic), marker=ev.event_id
        )


BAD_CATEGORIES = (
    "wrong_type",
    "missing_field",
    "extra_field",
    "constraint",
    "huge_string",
    "invalid_utf8",
    "schema_version",
    "bad_tenant",
    "compression_frame",
    "not_object",
    "malformed_json",
    "wrong_event_type",
    "handler_rejects",
)


def oversized(topic: str, size: int, rng: random.Random) -> Item:
    """Invalid and incompressible, so its size is its size on the wire."""
    head = b'{"tenant_id":"' + BAD_TENANT.encode() + b'","fuzz":"'
    return Item(topic, head + rng.randbytes(size - len(head)), "oversized", key=b"fuzz/oversized")


# --- the plan -----------------------------------------------------------------------------------------------


def odd_items(valid: Valid, n: int, rng: random.Random) -> list[Item]:
    """Valid events with unknown tenants and odd queries (handled, not dead-lettered)."""
    out: list[Item] = []
    for i in range(n):
        tenant = f"fuzznobody{i % 5}"
        key = f"{tenant}/ghost-{i}".encode()  # keyed: the compacted topic refuses keyless records
        roll = i % 6
        if roll == 0:
            ev: Any = DocumentChanged(tenant_id=tenant, op="delete", document_id=f"ghost-{i}")
            out.append(Item(SOURCE_CHANGES.name, _enc(ev), "valid:unknown_tenant_delete", key=key))
        elif roll == 1:
            ev = AclChanged(tenant_id=tenant, document_id=f"ghost-{i}", acl=Acl(groups=("g",)))
            topic = rng.choice(INPUTS[:3])
            out.append(Item(topic, _enc(ev), "valid:unknown_tenant_acl", key=key))
        elif roll == 2:
            ev = DocumentRemoved(tenant_id=tenant, document_id=f"ghost-{i}")
            out.append(Item(rng.choice(INPUTS[1:3]), _enc(ev), "valid:unknown_tenant_removed", key=key))
        else:
            changes = [
                {},
                {"deadline_at": utcnow() - timedelta(minutes=1)},
                {"top_k": rng.choice([0, -3, 1_000_000])},
            ][roll - 3]
            spec = valid.spec(**changes)
            ev = QueryRequested(tenant_id=tenant if roll == 3 else GOOD_TENANT, query=spec)
            what = "unknown_tenant_query" if roll == 3 else ("past_deadline" if roll == 4 else "odd_top_k")
            item = Item(QUERIES_REQUESTED.name, _enc(ev), f"valid:{what}", key=spec.query_id.encode())
            out.append(replace(item, query_id=spec.query_id))
    return out


def _enc(ev: Any) -> bytes:
    return ev.model_dump_json().encode()


def good_items(valid: Valid, n: int, rng: random.Random) -> list[Item]:
    """Good documents on the three ingestion topics (some with forged headers): each must be indexed."""
    out: list[Item] = []
    for i in range(n):
        doc = f"good-{i:06d}"
        topic = INPUTS[i % 3]
        if topic == SOURCE_CHANGES.name:
            ev: Any = valid.changed(GOOD_TENANT, doc)
            version = ev.source_version
        elif topic == DOCUMENTS_NORMALIZED.name:
            ev = valid.normalized(GOOD_TENANT, doc)
            version = ev.facts.source_version
        else:
            ev = valid.chunked(GOOD_TENANT, doc)
            version = ev.facts.source_version
        headers = forged_headers(rng) if rng.random() < 0.2 else []
        key = f"{GOOD_TENANT}/{doc}".encode()
        out.append(Item(topic, _enc(ev), "good", key=key, headers=headers, good_doc=(doc, version)))
    return out


def plan(s: Settings, bad: int, good: int, odd: int, seed: int) -> list[Item]:
    rng = random.Random(seed)
    valid = Valid(s, rng)
    maker = Maker(valid, rng)
    items: list[Item] = []
    for size in (*UNDER_LIMIT, *OVER_LIMIT):
        items.append(oversized(INPUTS[len(items) % len(INPUTS)], size, rng))
    for i in range(bad - len(UNDER_LIMIT)):
        topic = INPUTS[i % len(INPUTS)]
        item = maker.make(topic, BAD_CATEGORIES[(i // len(INPUTS)) % len(BAD_CATEGORIES)])
        if rng.random() < 0.1:
            item.headers = forged_headers(rng)
            item.category = f"{item.category}+forged_headers"
        items.append(item)
    items += good_items(valid, good, rng) + odd_items(valid, odd, rng)
    rng.shuffle(items)
    return items


# --- the consumers, in this process -------------------------------------------------------------------------


class Host:
    """The six consumers with production handlers; a worker whose loop ends on its own is a crash, counted
    and restarted (as its Deployment would restart it)."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.base = Deps(s, llm=ExtractiveStub())
        self.workers: dict[str, Worker] = {}
        self.wired: dict[str, Wired] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.crashes: list[str] = []

    async def start(self) -> None:
        self.base = replace(self.base, embedder=await asyncio.to_thread(shared_embedder, self.s))
        for name in CONSUMERS:
            await self._start(name)

    async def _start(self, name: str) -> None:
        producer = Producer(self.s, TOPICS[CONSUMERS[name].output or CONSUMERS[name].topic].compression)
        wired = await asyncio.to_thread(wire, name, self.base, producer)
        worker = worker_for(wired, producer)
        await worker.start()
        self.wired[name], self.workers[name] = wired, worker
        self.tasks[name] = asyncio.create_task(worker.run(), name=f"fuzz-{name}")

    async def check(self) -> None:
        for name, task in list(self.tasks.items()):
            if not task.done():
                continue
            exc = task.exception() if not task.cancelled() else None
            self.crashes.append(f"{name}: {type(exc).__name__ if exc else 'returned'}: {exc}"[:300])
            log.error("consumer %s crashed: %s; restarting it", name, exc)
            with contextlib.suppress(Exception):
                await self.workers[name].stop()
            self.wired[name].close()
            await self._start(name)

    async def stop(self) -> None:
        for w in self.workers.values():
            w.request_stop()
        await asyncio.wait(list(self.tasks.values()), timeout=30)
        for w in self.workers.values():
            await w.stop()
        for t in self.tasks.values():
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for wired in self.wired.values():
            wired.close()


class Rewinds(logging.Handler):
    """Counts the worker's "batch failed before commit" rewinds (a record that keeps failing there would
    jam its partition)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "failed before commit" in record.getMessage():
            self.count += 1


# --- sending and reading back -------------------------------------------------------------------------------


async def send_all(s: Settings, items: list[Item], rate: float, host: Host) -> None:
    # max_request_size above the topic's limit: records over it must reach the broker to be refused there.
    producer = kafka.producer(
        s.kafka, acks="all", max_request_size=25_000_000, compression_type=None, linger_ms=5
    )
    await producer.start()
    try:
        pending: list[tuple[Item, asyncio.Future[Any]]] = []
        t0 = time.monotonic()
        for i, item in enumerate(items):
            fut = await producer.send(
                s.kafka.topic_prefix + item.topic, item.value, key=item.key, headers=item.headers or None
            )
            pending.append((item, fut))
            if len(pending) >= 200 or (item.value and len(item.value) > 1_000_000):
                await _settle(pending)
                await host.check()
            ahead = (i + 1) / rate - (time.monotonic() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await _settle(pending)
    finally:
        await producer.stop()


async def _settle(pending: list[tuple[Item, asyncio.Future[Any]]]) -> None:
    for item, fut in pending:
        try:
            meta = await fut
        except Exception as exc:  # the broker refused the record (over max.message.bytes)
            item.refused = type(exc).__name__
            continue
        item.partition, item.offset = meta.partition, meta.offset
    pending.clear()


async def wait_drained(s: Settings, settle_s: float, host: Host) -> dict[str, int]:
    """Input partitions ("consumer/partition" -> lag) still behind after `settle_s` ({} once all are 0)."""
    t0 = time.monotonic()
    async with LagReader(s.kafka, client_id="fuzz-lag") as reader:
        while True:
            await host.check()
            behind: dict[str, int] = {}
            for name, spec in CONSUMERS.items():
                found = await reader.offsets(group_id(s.kafka, name), s.kafka.topic_prefix + spec.topic)
                for p, end in found.ends.items():
                    if end - found.committed.get(p, 0) > 0:
                        behind[f"{name}/{p}"] = end - found.committed.get(p, 0)
            if not behind or time.monotonic() - t0 > settle_s:
                return behind
            await asyncio.sleep(0.5)


async def read_topic(s: Settings, topic: str) -> list[Any]:
    consumer = kafka.consumer(
        s.kafka, enable_auto_commit=False, max_partition_fetch_bytes=s.kafka.max_message_bytes
    )
    await consumer.start()
    try:
        tps = await partitions_of(consumer, s.kafka.topic_prefix + topic)
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any([await consumer.position(tp) < ends[tp] for tp in tps]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


@dataclass
class Report:
    bad_sent: int = 0
    dead_lettered: int = 0
    dead_letters_with_reason: int = 0
    refused_by_broker: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    good_sent: int = 0
    good_indexed: int = 0
    missed: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    odd: Counter[str] = field(default_factory=Counter)
    odd_dead_lettered: Counter[str] = field(default_factory=Counter)
    queries_unanswered: int = 0
    tenants_created_for_unknown: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)


async def tally(s: Settings, items: list[Item]) -> Report:
    r = Report()
    letters: list[DeadLetter] = []
    for topic in INPUTS:
        letters += [
            DeadLetter.model_validate_json(rec.value) for rec in await read_topic(s, TOPICS[topic].dlq)
        ]
    by_place = {(d.original_topic, d.original_partition, d.original_offset): d for d in letters}
    by_marker = [(base64.b64decode(d.raw_b64), d) for d in letters]
    answers = {
        getattr(ev, "query_id", None)
        for rec in await read_topic(s, ANSWERS.name)
        if isinstance(ev := _maybe(ANSWERS.name, rec.value), QueryAnswered | QueryFailed)
    }
    for item in items:
        place = (s.kafka.topic_prefix + item.topic, item.partition, item.offset)
        dl = by_place.get(place) or next(
            (d for raw, d in by_marker if item.marker and item.marker.encode() in raw), None
        )
        if item.refused:
            r.refused_by_broker += 1
            r.refused[f"{item.category}:{item.refused}"] += 1
            continue
        if item.bad:
            count_bad(r, item, dl)
        elif item.category.startswith("valid:"):
            r.odd[item.category] += 1
            if dl is not None:
                r.odd_dead_lettered[f"{item.category}:{dl.reason}"] += 1
            if item.query_id and item.query_id not in answers and dl is None:
                r.queries_unanswered += 1
        else:
            r.good_sent += 1
    r.good_indexed = await asyncio.to_thread(indexed, s, items, r)
    return r


def count_bad(r: Report, item: Item, dl: DeadLetter | None) -> None:
    r.bad_sent += 1
    r.categories[item.category.split("+")[0]] += 1
    if dl is None:
        r.missed[item.category] += 1
        if len(r.examples) < 10:
            r.examples.append(f"{item.topic} {item.category}: {(item.value or b'')[:120]!r}")
        return
    r.dead_lettered += 1
    if dl.reason and dl.message:
        r.dead_letters_with_reason += 1
        r.reasons[f"{dl.stage}:{dl.reason}"] += 1


def _maybe(topic: str, raw: bytes | None) -> Any:
    try:
        return decode(topic, raw or b"")
    except EventDecodeError:
        return None


def indexed(s: Settings, items: list[Item], r: Report) -> int:
    """Good documents whose state carries the version they were sent with; and no tenant created for an
    unknown one (deletes and ACL changes of nobody's documents must not create tenants)."""
    client, store = open_store(s)
    try:
        states = {st.document_id: st for st in store.list_states(GOOD_TENANT, limit=None)}
        ok = sum(
            1
            for it in items
            if it.good_doc
            and not it.refused
            and (st := states.get(it.good_doc[0]))
            and st.live_version == it.good_doc[1]
        )
        r.tenants_created_for_unknown = [
            t for t in (f"fuzznobody{i}" for i in range(5)) if store.has_tenant(t)
        ]
        return ok
    finally:
        client.close()


# --- the run ------------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = isolated_settings(partitions=args.partitions)
    # The embedding backend is not under test here: a fixed one spares the start-up probe.
    s = base.model_copy(
        update={"embedding": base.embedding.model_copy(update={"backend": args.embedding_backend})}
    )
    await ensure_topics(s.kafka, desired_topics(s.kafka))
    rewinds = Rewinds()
    logging.getLogger("ragstream.runtime.worker").addHandler(rewinds)
    items = await asyncio.to_thread(plan, s, args.events, args.good, args.odd, args.seed)
    host = Host(s)
    try:
        await host.start()
        t0 = time.monotonic()
        await send_all(s, items, args.rate, host)
        sent_s = time.monotonic() - t0
        stuck = await wait_drained(s, args.settle_s, host)
        drain_s = time.monotonic() - t0 - sent_s
        if stuck:  # keep waiting (bounded) so the tally reflects the pipeline, not the settle window
            log.warning("behind %.0fs after the last send: %s", args.settle_s, stuck)
            await wait_drained(s, args.settle_s * 4, host)
        report = await tally(s, items)
        crashes = list(host.crashes)
    finally:
        await host.stop()
        logging.getLogger("ragstream.runtime.worker").removeHandler(rewinds)
        if not args.keep:
            await cleanup(s)
    extra = details(report, crashes, rewinds.count, sent_s, drain_s, s)
    print(json.dumps({**extra, "behind_at_settle": stuck}), flush=True)
    return {
        "bad_sent": report.bad_sent,
        "dead_lettered": report.dead_lettered,
        "dead_letters_with_reason": report.dead_letters_with_reason,
        "worker_crashes": len(crashes),
        "stuck_partitions": len(stuck),
        "good_sent": report.good_sent,
        "good_indexed": report.good_indexed,
    }


def details(
    r: Report, crashes: list[str], rewinds: int, sent_s: float, drain_s: float, s: Settings
) -> dict[str, Any]:
    return {
        "topic_prefix": s.kafka.topic_prefix,
        "bad_by_category": dict(sorted(r.categories.items())),
        "dead_letter_reasons": dict(r.reasons.most_common()),
        "bad_not_dead_lettered": dict(r.missed),
        "refused_by_broker": r.refused_by_broker,
        "refused_by_broker_why": dict(r.refused),
        "valid_unusual_sent": dict(sorted(r.odd.items())),
        "valid_unusual_dead_lettered": dict(r.odd_dead_lettered),
        "valid_queries_unanswered": r.queries_unanswered,
        "tenants_created_for_unknown_tenants": r.tenants_created_for_unknown,
        "worker_crash_details": crashes,
        "rewinds_before_commit": rewinds,
        "send_s": round(sent_s, 1),
        "drain_after_send_s": round(drain_s, 1),
        "examples_missed": r.examples,
    }


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000, help="bad events (all input topics together)")
    ap.add_argument("--good", type=int, default=None, help="good documents (default: events / 20)")
    ap.add_argument("--odd", type=int, default=None, help="valid unusual events (default: events / 50)")
    ap.add_argument("--rate", type=float, default=300.0, help="records sent per second")
    ap.add_argument("--settle-s", type=float, default=60.0)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--embedding-backend", default="torch-fp32", help="embedding.backend (auto probes)")
    ap.add_argument("--keep", action="store_true", help="keep the run's topics and collections")
    args = ap.parse_args(argv)
    args.good = args.events // 20 if args.good is None else args.good
    args.odd = max(6, args.events // 50) if args.odd is None else args.odd
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    exit_on_sigterm()
    result = asyncio.run(run(parse(argv)))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
