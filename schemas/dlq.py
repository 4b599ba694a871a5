"""The dead-letter record, shared by every consumer: what failed, where, why, and (a bounded prefix of) the
raw bytes."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["DeadLetter"] = "DeadLetter"
    dead_letter_id: str
    stage: str
    consumer_group: str
    reason: str
    error_class: str
    message: str
    original_topic: str
    original_partition: int
    original_offset: int
    original_key_b64: str | None = None
    original_headers: dict[str, str] = {}
    # At most a bounded prefix of the original record (so the dead letter always fits a record); the
    # length and sha256 are of the whole. A truncated dead letter cannot be replayed from here.
    raw_b64: str
    raw_length: int = 0
    raw_sha256: str = ""
    raw_truncated: bool = False
    tenant_id: str | None = None
    failed_at: AwareDatetime
    replayed_from: str | None = None
