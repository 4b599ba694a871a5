"""The dead-letter record, shared by every consumer: what failed, where, why, and the raw bytes."""

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
    raw_b64: str
    tenant_id: str | None = None
    failed_at: AwareDatetime
    replayed_from: str | None = None
