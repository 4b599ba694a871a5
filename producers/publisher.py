"""DocumentPublisher: the SDK upstream systems use to publish source changes.

Out: ragstream.ingest.source-changes.v1, keyed by `tenant/document`, idempotent producer, acks=all.
Large content travels by URI (file:// locally, an object store in production), small content inline.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from ragstream.runtime.worker import Outbound, Producer
from ragstream.settings import Settings
from schemas.ingestion import INLINE_CONTENT_MAX_BYTES, Acl, AclChanged, DocumentChanged
from schemas.topics import SOURCE_CHANGES

tracer = trace.get_tracer("ragstream.publisher")


def doc_key(tenant_id: str, document_id: str) -> bytes:
    return f"{tenant_id}/{document_id}".encode()


class DocumentPublisher:
    def __init__(self, settings: Settings, producer_name: str = "ragstream.publisher") -> None:
        self._producer = Producer(settings, SOURCE_CHANGES.compression)
        self.name = producer_name

    async def __aenter__(self) -> DocumentPublisher:
        await self._producer.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._producer.stop()

    async def upsert(
        self,
        tenant_id: str,
        document_id: str,
        *,
        content: bytes | None = None,
        content_uri: str | None = None,
        mime_type: str = "text/plain",
        acl: Acl | None = None,
        owner: str = "",
        source_id: str = "",
        source_version: str = "",
        title: str = "",
        metadata: Mapping[str, str] | None = None,
        size_bytes: int | None = None,
        content_sha256: str | None = None,
        modified_at: datetime | None = None,
    ) -> DocumentChanged:
        if content is not None and len(content) > INLINE_CONTENT_MAX_BYTES and content_uri is None:
            raise ValueError(f"content over {INLINE_CONTENT_MAX_BYTES} bytes must be passed by content_uri")
        digest = content_sha256 or (hashlib.sha256(content).hexdigest() if content is not None else "")
        event = DocumentChanged(
            tenant_id=tenant_id,
            op="upsert",
            document_id=document_id,
            producer=self.name,
            content_b64=base64.b64encode(content).decode() if content is not None else None,
            content_uri=content_uri if content is None else None,
            mime_type=mime_type,
            acl=acl or Acl(),
            owner=owner,
            source_id=source_id or document_id,
            source_version=source_version or digest[:16],
            title=title,
            metadata=dict(metadata or {}),
            content_sha256=digest,
            size_bytes=size_bytes if size_bytes is not None else len(content or b""),
            modified_at=modified_at,
        )
        await self._send(event)
        return event

    async def delete(self, tenant_id: str, document_id: str) -> DocumentChanged:
        event = DocumentChanged(tenant_id=tenant_id, op="delete", document_id=document_id, producer=self.name)
        await self._send(event)
        return event

    async def acl_change(
        self, tenant_id: str, document_id: str, acl: Acl, acl_version: int = 0
    ) -> AclChanged:
        event = AclChanged(
            tenant_id=tenant_id, document_id=document_id, acl=acl, acl_version=acl_version, producer=self.name
        )
        await self._send(event)
        return event

    async def send_raw(self, key: bytes, value: bytes) -> None:
        """Publish bytes as-is (tests and `dlq replay` use it to send what a broken upstream would)."""
        await self._producer._p.send_and_wait(self._producer.prefix + SOURCE_CHANGES.name, value, key=key)

    async def _send(self, event: DocumentChanged | AclChanged) -> None:
        # The root of the change's trace: normalize -> chunk -> embed -> index continue it over Kafka.
        attrs = {
            "messaging.system": "kafka",
            "messaging.destination.name": SOURCE_CHANGES.name,
            "ragstream.tenant_id": event.tenant_id,
            "ragstream.document_id": event.document_id,
            "ragstream.event_type": type(event).__name__,
        }
        with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER, attributes=attrs):
            await self._producer.send_many(
                [Outbound(SOURCE_CHANGES.name, doc_key(event.tenant_id, event.document_id), event)]
            )
