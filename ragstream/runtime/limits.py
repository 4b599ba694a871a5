"""Every size limit, derived in one place from the topics' max message size (`kafka.max_message_bytes`).

A record that cannot be sent must never be what a worker retries: the dead letter of any input keeps a
bounded prefix of it (so it always fits), documents are capped so their normalized text and chunks fit a
record, and an output that would still be too large is itself dead-lettered (`output_too_large`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ragstream.settings import Settings
from schemas.ingestion import INLINE_CONTENT_MAX_BYTES

# Keys, headers and the JSON framing around the largest payload of an event.
HEADROOM_BYTES = 64 * 1024
# What a dead letter keeps of the raw record: enough to see what it was, never enough to not fit.
DEAD_LETTER_PREFIX_MAX = 64 * 1024


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int
    configured_document_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.kafka.max_message_bytes, settings.ingest.max_document_bytes)

    @property
    def payload_bytes(self) -> int:
        """The largest serialized event a worker sends (the rest of the record is headroom)."""
        return max(1024, self.max_message_bytes - HEADROOM_BYTES)

    @property
    def inline_content_bytes(self) -> int:
        """Raw bytes a DocumentChanged may carry inline (base64: 4/3 of that on the wire)."""
        return min(INLINE_CONTENT_MAX_BYTES, self.payload_bytes * 3 // 4)

    @property
    def text_bytes(self) -> int:
        """Normalized text of one document: its chunks repeat the overlap and carry per-chunk fields, so
        the chunked event is up to ~1.5x the text; half a record leaves room for both."""
        return self.payload_bytes // 2

    @property
    def document_bytes(self) -> int:
        """Raw bytes read for one document (a URI's content): the setting, never more than a record
        can carry once normalized."""
        return min(self.configured_document_bytes, max(self.text_bytes, 1))

    @property
    def dead_letter_prefix_bytes(self) -> int:
        # base64 (+33 %) of the prefix plus the rest of the dead letter must fit a record.
        return min(DEAD_LETTER_PREFIX_MAX, self.payload_bytes // 4)

    def fits(self, serialized: bytes) -> bool:
        return len(serialized) <= self.payload_bytes
