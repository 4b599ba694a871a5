"""The AsyncAPI 3.0 document of the event contracts, generated from the real declarations.

Read from the composition root's `MODULES` (so only consumers that run appear) and, for each, its `SPEC`
(`schemas.topics.ConsumerSpec`: input topic, output topics, group), its `NEEDS`, its header docstring and the
`build_handler` it is bound to; the channels and their events from the topic registry (`schemas.topics.TOPICS`
and each topic's event union); payloads are the events' pydantic JSON Schemas; every consumer dead-letters
into its input topic's `.dlq` channel (`schemas.dlq.DeadLetter`).

    ragstream contracts            # rewrite schemas/generated/ (this document and the JSON Schemas)
    ragstream contracts --check    # exit 1 when the checked-in files differ from the code

A unit test asserts the checked-in file equals `render()` and that the official AsyncAPI parser
(`@asyncapi/parser`, deploy/tools/asyncapi-validate.mjs) reports no errors.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from application.compose import MODULES
from ragstream.settings import KafkaSettings
from schemas.dlq import DeadLetter
from schemas.topics import TOPICS, ConsumerSpec, TopicSpec, written_topics

PATH = Path(__file__).resolve().parents[1] / "schemas" / "generated" / "asyncapi.yaml"
ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING = "0.5.0"
SCHEMAS = "#/components/schemas/{model}"

Json = dict[str, Any]


def event_types(model: Any) -> list[type[BaseModel]]:
    """The event classes a topic's model admits (`Annotated[A | B, discriminator]` -> [A, B])."""
    if typing.get_origin(model) is typing.Annotated:
        return event_types(typing.get_args(model)[0])
    members = typing.get_args(model)
    return [m for a in members for m in event_types(a)] if members else [model]


def _summary(obj: Any) -> str:
    """The first line of `obj`'s own docstring ("" when it has none: never an inherited one)."""
    own = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
    return inspect.cleandoc(own or "").split("\n", 1)[0].strip()


def _ref(*parts: str) -> Json:
    # JSON Pointer escaping (RFC 6901): names here are topic names and class names, but keep it exact.
    return {"$ref": "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)}


def _topic_binding(spec: TopicSpec, partitions: int | None) -> Json:
    config: Json = {"cleanup.policy": ["compact" if spec.compacted else "delete"]}
    config["retention.ms"] = spec.retention_ms
    binding: Json = {"topic": spec.name}
    if partitions is not None:
        binding["partitions"] = partitions
    binding |= {"topicConfiguration": config, "bindingVersion": KAFKA_BINDING}
    return {"kafka": binding}


def topic_channel(spec: TopicSpec) -> Json:
    return {
        "address": spec.name,
        "title": spec.name,
        "description": f"{spec.description}. Key: {spec.key}; compression: {spec.compression or 'none'}.",
        "messages": {m.__name__: _ref("components", "messages", m.__name__) for m in event_types(spec.model)},
        "bindings": _topic_binding(spec, spec.partitions),
    }


def dlq_channel(spec: TopicSpec) -> Json:
    return {
        "address": spec.dlq,
        "title": spec.dlq,
        "description": f"Records of {spec.name} a consumer could not process: why, where, the raw bytes.",
        # One partition, 30 days (ragstream.runtime.kafka_admin.desired_topics).
        "messages": {DeadLetter.__name__: _ref("components", "messages", DeadLetter.__name__)},
        "bindings": {
            "kafka": {
                "topic": spec.dlq,
                "partitions": 1,
                "topicConfiguration": {"cleanup.policy": ["delete"], "retention.ms": 30 * 24 * 3600 * 1000},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _handler_path(module: ModuleType) -> str:
    return f"{module.__name__}.{module.build_handler.__name__}"


def _bound(module: ModuleType) -> Json:
    """What an operation runs: the consumer module, its handler factory and the adapters it needs."""
    return {
        "x-consumer-module": module.__name__,
        "x-handler": _handler_path(module),
        "x-needs": list(module.NEEDS),
    }


def consumer_operations(module: ModuleType) -> dict[str, Json]:
    """`<name>.receive` on its input, `<name>.send.<topic>` per output, `<name>.deadLetter` on the DLQ."""
    spec: ConsumerSpec = module.SPEC
    group = {"kafka": {"groupId": {"type": "string", "enum": [spec.group]}, "bindingVersion": KAFKA_BINDING}}
    ops: dict[str, Json] = {
        f"{spec.name}.receive": {
            "action": "receive",
            "channel": _ref("channels", spec.topic),
            "title": f"{spec.name} consumes {spec.topic}",
            "summary": _summary(module),
            "description": inspect.getdoc(module) or "",
            "bindings": group,
            **_bound(module),
        }
    }
    for topic in written_topics(spec):
        ops[f"{spec.name}.send.{topic}"] = {
            "action": "send",
            "channel": _ref("channels", topic),
            "title": f"{spec.name} produces to {topic}",
            **_bound(module),
        }
    ops[f"{spec.name}.deadLetter"] = {
        "action": "send",
        "channel": _ref("channels", TOPICS[spec.topic].dlq),
        "title": f"{spec.name} dead-letters what it cannot process from {spec.topic}",
        **_bound(module),
    }
    return ops


def _message(model: type[BaseModel], keys: set[str]) -> Json:
    key = " | ".join(sorted(keys))
    summary = {"summary": s} if (s := _summary(model)) else {}
    return {
        "name": model.__name__,
        "title": model.__name__,
        **summary,
        "contentType": "application/json",
        "payload": {"$ref": SCHEMAS.format(model=model.__name__)},
        "bindings": {
            "kafka": {"key": {"type": "string", "description": key}, "bindingVersion": KAFKA_BINDING}
        },
    }


def components(topics: list[TopicSpec]) -> Json:
    """Messages (one per event class, shared by the topics that carry it) and their payload schemas."""
    keys: dict[type[BaseModel], set[str]] = {}
    for spec in topics:
        for model in event_types(spec.model):
            keys.setdefault(model, set()).add(spec.key)
    keys[DeadLetter] = {"the failed record's key (else dead_letter_id)"}
    models = list(keys)
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=SCHEMAS)
    return {
        "schemas": dict(sorted(defs["$defs"].items())),
        "messages": {m.__name__: _message(m, keys[m]) for m in sorted(models, key=lambda m: m.__name__)},
    }


def used_topics() -> list[TopicSpec]:
    """The topics some consumer reads or writes, in registry order."""
    used = {t for m in MODULES.values() for t in (m.SPEC.topic, *written_topics(m.SPEC))}
    return [spec for name, spec in TOPICS.items() if name in used]


def document() -> Json:
    topics = used_topics()
    inputs = [TOPICS[m.SPEC.topic] for m in MODULES.values()]
    channels: Json = {spec.name: topic_channel(spec) for spec in topics}
    channels |= {spec.dlq: dlq_channel(spec) for spec in inputs}
    operations: Json = {}
    for module in MODULES.values():
        operations |= consumer_operations(module)
    host = KafkaSettings.model_fields["bootstrap_servers"].default
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "ragstream",
            "version": "1",
            "description": (
                "Event contracts of ragstream's consumers: topics (versioned, `.v1`), the events each "
                "carries, consumer groups, dead-letter topics and the handler each consumer is bound to. "
                "Generated by application/asyncapi.py from the consumer modules and schemas/topics.py; "
                "do not edit."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": host,
                "protocol": "kafka",
                "description": "`ragstream stack up` (production: kafka.bootstrap_servers and its security)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": components(topics),
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the consumer headers) as literal blocks, so the document reads like the source."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    # Built from ordered registries, so the output is stable without sorting keys (kept in reading order).
    return yaml.dump(document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)


def is_current(path: Path = PATH) -> bool:
    return path.is_file() and path.read_text(encoding="utf-8") == render()


def write(path: Path = PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    return path
