"""The durable generation registry (a Weaviate collection) and the live alias.

The registry is an append-only collection beside the index (so every backup carries it): one object per
immutable record (uuid derived from the generation name, written once) and one per event. Nothing is ever
updated or deleted in it. The live alias (`<chunks prefix>` -> `<chunks prefix>_<generation>`) is what
readers search through; moving it is the atomic switch of promotion and rollback.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import weaviate
from weaviate.classes.config import Configure, DataType, Property, Tokenization

from ragstream import names
from ragstream.generations.record import GenerationEvent, GenerationRecord, RegistryView
from ragstream.settings import Settings

NS = uuid.UUID("0b9f8a4e-5f3c-4e0a-9d7b-2c6e1f4a8b31")


def _field(name: str, dt: DataType = DataType.TEXT) -> Property:
    return Property(
        name=name,
        data_type=dt,
        tokenization=Tokenization.FIELD,
        index_searchable=False,
        index_filterable=True,
    )


PROPERTIES = [
    _field("kind"),  # record | event
    _field("generation"),
    _field("generation_id"),
    _field("event_kind"),
    _field("tenant"),
    Property(name="seq", data_type=DataType.INT, index_filterable=True),
    Property(name="at", data_type=DataType.DATE),
    Property(name="body", data_type=DataType.TEXT, index_searchable=False, index_filterable=False),
]


class RegistryError(RuntimeError):
    pass


class Registry:
    """Append-only records and events of one index's generations, plus its live alias."""

    def __init__(self, client: weaviate.WeaviateClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.index = settings.index
        self.name = settings.generations.registry_collection
        self.alias = names.live_alias(settings.index)

    # --- storage ------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return bool(self.client.collections.exists(self.name))

    def ensure(self) -> None:
        if self.exists():
            return
        try:
            self.client.collections.create(
                self.name,
                properties=PROPERTIES,
                vector_config=Configure.Vectors.self_provided(),
                inverted_index_config=Configure.inverted_index(index_null_state=False),
            )
        except weaviate.exceptions.UnexpectedStatusCodeError as exc:
            if "already exists" not in str(exc):
                raise

    def put_record(self, record: GenerationRecord) -> GenerationRecord:
        """Write a record once; writing the same content again returns the stored one."""
        record.verify()
        self.ensure()
        coll = self.client.collections.use(self.name)
        oid = uuid.uuid5(NS, f"record/{record.name}")
        found = coll.query.fetch_object_by_id(oid)
        if found is not None:
            stored = GenerationRecord.model_validate_json(found.properties["body"])
            if stored.generation_id != record.generation_id:
                raise RegistryError(f"generation name {record.name!r} is taken by different content")
            return stored
        coll.data.insert(
            properties={
                "kind": "record",
                "generation": record.name,
                "generation_id": record.generation_id,
                "seq": int(record.created_at.timestamp() * 1_000_000),
                "at": record.created_at.isoformat(),
                "body": record.model_dump_json(),
            },
            uuid=oid,
        )
        return record

    def append(self, event: GenerationEvent) -> GenerationEvent:
        self.ensure()
        self.client.collections.use(self.name).data.insert(
            properties={
                "kind": "event",
                "generation": event.generation,
                "event_kind": event.kind,
                "tenant": event.tenant or "",
                "seq": event.seq,
                "at": event.at.isoformat(),
                "body": event.model_dump_json(),
            },
            uuid=uuid.UUID(event.event_id),
        )
        return event

    def load(self) -> tuple[list[GenerationRecord], list[GenerationEvent]]:
        if not self.exists():
            return [], []
        records: list[GenerationRecord] = []
        events: list[GenerationEvent] = []
        for obj in self.client.collections.use(self.name).iterator(return_properties=["kind", "body"]):
            body = obj.properties["body"]
            if obj.properties["kind"] == "record":
                records.append(GenerationRecord.model_validate_json(body))
            else:
                events.append(GenerationEvent.model_validate_json(body))
        return records, events

    def view(self) -> RegistryView:
        records, events = self.load()
        view = RegistryView.fold(records, events)
        target = self.alias_target()
        view.alias_target = names.generation_of(self.index, target) if target else None
        return view

    def record(self, name: str) -> GenerationRecord:
        view = self.view()
        if name not in view.generations:
            raise RegistryError(f"unknown generation {name!r}")
        return view.generations[name].record

    # --- the live alias -----------------------------------------------------------------------------
    def alias_target(self) -> str | None:
        """The collection the live alias points at, or None when there is no alias."""
        found = self.client.alias.get(alias_name=self.alias)
        return found.collection if found is not None else None

    def point_alias(self, collection: str) -> None:
        """Create or move the live alias: one schema operation, so readers switch atomically."""
        if not self.client.collections.exists(collection):
            raise RegistryError(f"collection {collection} does not exist")
        if self.alias_target() is None:
            self.client.alias.create(alias_name=self.alias, target_collection=collection)
        else:
            self.client.alias.update(alias_name=self.alias, new_target_collection=collection)


def load_view(client: weaviate.WeaviateClient, settings: Settings) -> RegistryView | None:
    """The routing view, or None when this index has no registry yet (static routing)."""
    reg = Registry(client, settings)
    if not reg.exists():
        return None
    return reg.view()


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str, sort_keys=True)
