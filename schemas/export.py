"""Export the contracts: JSON Schema per topic and one AsyncAPI document, both checked in under schemas/.

`python -m schemas.export` rewrites them; `python -m schemas.export --check` exits 1 when they are stale
(a test runs the check, so a model change without a re-export fails CI).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from schemas.dlq import DeadLetter
from schemas.topics import CONSUMERS, TOPICS

OUT = Path(__file__).parent / "generated"


def json_schemas() -> dict[str, str]:
    files = {}
    for spec in TOPICS.values():
        schema = spec.adapter.json_schema()
        schema["title"] = spec.name
        schema["description"] = spec.description
        files[f"{spec.name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    files["dead-letter.schema.json"] = (
        json.dumps(DeadLetter.model_json_schema(), indent=2, sort_keys=True) + "\n"
    )
    return files


def _handler(model: Any) -> Any:
    async def handle(event: Any) -> None:
        return None

    # Real types, not strings: FastStream reads the annotation to build the message schema.
    handle.__annotations__ = {"event": model, "return": None}
    return handle


def asyncapi_yaml() -> str:
    broker = KafkaBroker("kafka:9092", description="ragstream event contracts")
    for consumer in CONSUMERS.values():
        spec = TOPICS[consumer.topic]
        handler = _handler(spec.model)
        handler.__name__ = consumer.name
        if consumer.output:
            out = TOPICS[consumer.output]
            handler = broker.publisher(
                out.name, title=f"{consumer.output}:{consumer.name}", schema=out.model
            )(handler)
        broker.subscriber(
            consumer.topic,
            group_id=consumer.group,
            title=f"{consumer.topic}:{consumer.group}",
            description=spec.description,
        )(handler)
    doc = AsyncAPI(broker, title="ragstream", version="1", description="Topics, consumer groups and events")
    # FastStream's channel order varies between runs; sort keys so the checked-in file is stable.
    return yaml.safe_dump(doc.to_specification().to_jsonable(), sort_keys=True, allow_unicode=True)


def render() -> dict[str, str]:
    return {**json_schemas(), "asyncapi.yaml": asyncapi_yaml()}


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (OUT / n).exists() or (OUT / n).read_text() != text]
        extra = [p.name for p in OUT.glob("*") if p.name not in files] if OUT.exists() else []
        if stale or extra:
            print(f"stale contract exports: {stale + extra}; run `python -m schemas.export`")
            return 1
        return 0
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*"):
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(files)} files to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
