"""The envelope every ragstream event carries.

Events are past-tense facts. Each concrete event class fixes its `type` (a Literal used as the union
discriminator) and its `SCHEMA_VERSION`; an event with an unknown version is refused by name, never guessed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

# Weaviate tenant names: letters, digits, '-' and '_', at most 64 characters.
TenantId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
DocumentId = Annotated[str, StringConstraints(min_length=1, max_length=512)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every event: the envelope fields plus the payload fields of the subclass."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    SCHEMA_VERSION: ClassVar[int] = 1

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    schema_version: int = 1
    tenant_id: TenantId
    correlation_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    causation_id: str | None = None
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    producer: str = "ragstream"

    @model_validator(mode="after")
    def _known_version(self) -> Event:
        if self.schema_version != self.SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported by {type(self).__name__} "
                f"(expected {self.SCHEMA_VERSION})"
            )
        return self

    def caused(self, **fields: object) -> dict[str, object]:
        """Envelope fields for an event caused by this one (same tenant and correlation)."""
        return {
            "tenant_id": self.tenant_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.event_id,
            **fields,
        }
