"""The checked-in JSON Schemas and AsyncAPI document match the code's models."""

from __future__ import annotations

import json

import pytest

from schemas import export
from schemas.topics import TOPICS

pytestmark = pytest.mark.unit


def test_exports_up_to_date() -> None:
    assert export.main(["--check"]) == 0


def test_every_topic_in_asyncapi_and_schemas() -> None:
    doc = (export.OUT / "asyncapi.yaml").read_text()
    for name in TOPICS:
        schema = json.loads((export.OUT / f"{name}.schema.json").read_text())
        assert schema["title"] == name
        if name != "ragstream.ingest.receipts.v1" and name != "ragstream.query.answers.v1":
            assert f"address: {name}" in doc
