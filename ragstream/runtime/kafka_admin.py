"""Create the registry's topics (idempotent), with compaction and retention from the registry."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic

from ragstream.runtime import kafka
from ragstream.settings import KafkaSettings
from schemas.topics import CONSUMERS, TOPICS, TopicSpec


def group_id(kafka: KafkaSettings, name: str, suffix: str = "") -> str:
    """Consumer `name`'s group id: the registry's group under the deployment's topic prefix, so two
    environments (or test runs) sharing a broker never share, or rebalance, one group."""
    return f"{kafka.topic_prefix}{CONSUMERS[name].group}{suffix}"


def topic_configs(spec: TopicSpec) -> dict[str, str]:
    cfg = {"retention.ms": str(spec.retention_ms), "max.message.bytes": "16000000"}
    if spec.compacted:
        cfg["cleanup.policy"] = "compact"
    return cfg


def desired_topics(cfg: KafkaSettings, specs: Iterable[TopicSpec] | None = None) -> list[NewTopic]:
    out: list[NewTopic] = []
    for spec in specs or TOPICS.values():
        partitions = (
            min(spec.partitions, cfg.default_partitions) if cfg.default_partitions else spec.partitions
        )
        out.append(
            NewTopic(
                cfg.topic_prefix + spec.name,
                partitions,
                cfg.replication_factor,
                topic_configs=topic_configs(spec),
            )
        )
        out.append(
            NewTopic(
                cfg.topic_prefix + spec.dlq,
                1,
                cfg.replication_factor,
                topic_configs={"retention.ms": str(30 * 24 * 3600 * 1000)},
            )
        )
    return out


async def ensure_topics(cfg: KafkaSettings, topics: list[NewTopic] | None = None) -> list[str]:
    """Create missing topics; returns the names created."""
    admin = kafka.admin(cfg, client_id=f"{cfg.client_id}-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            t for t in (topics if topics is not None else desired_topics(cfg)) if t.name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """A manually-assigned consumer's view of a topic's partitions.

    aiokafka only tracks metadata for subscribed topics; `topics()` fills a separate cache, so ask the
    client to track this topic and refresh (aiokafka has no public call for this).
    """
    consumer._client.add_topic(topic)
    await consumer._client.force_metadata_update()
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]


async def drop_topics(cfg: KafkaSettings, prefixes: Iterable[str], batch: int = 200) -> int:
    """Delete every topic under any of `prefixes` (test or benchmark namespaces); returns how many.
    Their consumer groups lose their offsets with the topics and expire as empty groups do. Refuses an
    empty prefix: that is everything."""
    wanted = tuple(prefixes)
    if not all(wanted):
        raise ValueError("refusing to drop the unprefixed (production) namespace")
    admin = kafka.admin(cfg, client_id=f"{cfg.client_id}-admin")
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if t.startswith(wanted))
        for i in range(0, len(topics), batch):
            await admin.delete_topics(topics[i : i + batch])
        return len(topics)
    finally:
        await admin.close()
