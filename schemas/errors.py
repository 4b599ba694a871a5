"""Typed decode errors: a malformed event names the field that is wrong, never crashes a consumer."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from schemas.topics import TOPICS, TopicSpec


class EventDecodeError(Exception):
    """Raised for bytes that are not a valid event of the topic's model."""

    def __init__(self, reason: str, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.fields = fields


def _field_path(err: dict[str, Any]) -> str:
    # Discriminated unions add the member's tag to the location; drop it so the path is the event's field.
    parts = [str(p) for p in err.get("loc", ())]
    parts = [p for p in parts if not p[:1].isupper()]
    return ".".join(parts) or "<root>"


def decode(topic: str | TopicSpec, raw: bytes) -> Any:
    """Bytes -> the topic's event model, or EventDecodeError naming what is wrong."""
    spec = TOPICS[topic] if isinstance(topic, str) else topic
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventDecodeError("malformed_json", f"not valid JSON: {exc}") from exc
    except RecursionError as exc:  # `[[[[...` nested past the parser's stack (found by bench.fuzz)
        raise EventDecodeError("malformed_json", "not valid JSON: nested too deeply") from exc
    if not isinstance(data, dict):
        raise EventDecodeError("malformed_json", "an event must be a JSON object")
    try:
        return spec.adapter.validate_python(data)
    except ValidationError as exc:
        errors = exc.errors()
        fields = tuple(sorted({_field_path(e) for e in errors}))
        reason = "invalid_payload"
        if any(e.get("type") == "missing" and _field_path(e) == "tenant_id" for e in errors):
            reason = "missing_tenant"
        elif any("schema_version" in str(e.get("msg", "")) for e in errors):
            reason = "unsupported_schema_version"
            fields = ("schema_version",)
        detail = "; ".join(f"{_field_path(e)}: {e['msg']}" for e in errors[:5])
        raise EventDecodeError(reason, f"{reason} ({', '.join(fields)}): {detail}", fields) from exc


def encode(event: Any) -> bytes:
    return event.model_dump_json().encode()
