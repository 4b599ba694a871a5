"""One source of truth: the rendered chart matches the code's topic/consumer registry (schemas/topics.py).

Every consumer group has exactly one Deployment running `ragstream worker NAME` and exactly one KEDA
ScaledObject whose kafka trigger names that group and its input topic, with maxReplicaCount <= the topic's
partitions; every topic the code uses, dead-letter topics included, has a KafkaTopic with the registry's
partitions, retention and compaction (dead-letter settings as ragstream.runtime.kafka_admin creates them);
nothing extra.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "tools"))

import manifests  # noqa: E402

from ragstream.runtime.kafka_admin import desired_topics  # noqa: E402
from ragstream.settings import KafkaSettings  # noqa: E402
from schemas.topics import CONSUMERS, TOPICS, all_topic_names  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return manifests.documents(manifests.helm_template())


def _kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _worker_deployments(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in _kind(docs, "Deployment")
        if d["spec"]["template"]["spec"]["containers"][0]["args"][:1] == ["worker"]
    ]


@pytest.mark.parametrize("name", sorted(CONSUMERS))
def test_each_consumer_has_exactly_one_deployment_and_one_scaled_object(docs: list, name: str) -> None:
    spec = CONSUMERS[name]
    deps = [
        d
        for d in _worker_deployments(docs)
        if d["spec"]["template"]["spec"]["containers"][0]["args"][1] == name
    ]
    assert len(deps) == 1, f"{name}: {len(deps)} Deployments run `ragstream worker {name}`"
    dep = deps[0]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["ragstream"]
    assert container["args"][:2] == ["worker", name] and "--metrics-port" in container["args"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert "replicas" not in dep["spec"], "the KEDA-owned HPA sets replicas; a fixed count would fight it"

    sos = [
        s
        for s in _kind(docs, "ScaledObject")
        if s["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    ]
    assert len(sos) == 1, f"{name}: {len(sos)} ScaledObjects target {dep['metadata']['name']}"
    so = sos[0]["spec"]
    assert so["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    triggers = so["triggers"]
    assert len(triggers) == 1 and triggers[0]["type"] == "kafka"
    meta = triggers[0]["metadata"]
    assert meta["consumerGroup"] == spec.group
    assert meta["topic"] == spec.topic
    assert meta["bootstrapServers"]
    lag, activation = int(meta["lagThreshold"]), int(meta["activationLagThreshold"])
    assert lag > 0 and 0 <= activation < lag
    assert meta.get("allowIdleConsumers", "false") == "false"
    partitions = TOPICS[spec.topic].partitions
    assert 0 <= so["minReplicaCount"] <= so["maxReplicaCount"] <= partitions
    assert so["cooldownPeriod"] > 0 and so["pollingInterval"] > 0


def test_no_deployment_or_scaled_object_outside_the_registry(docs: list) -> None:
    running = sorted(
        d["spec"]["template"]["spec"]["containers"][0]["args"][1] for d in _worker_deployments(docs)
    )
    assert running == sorted(CONSUMERS)
    groups = sorted(
        s["spec"]["triggers"][0]["metadata"]["consumerGroup"] for s in _kind(docs, "ScaledObject")
    )
    assert groups == sorted(c.group for c in CONSUMERS.values())


def test_every_topic_and_dead_letter_topic_has_a_matching_kafka_topic(docs: list) -> None:
    kt = {d["spec"]["topicName"]: d for d in _kind(docs, "KafkaTopic")}
    assert sorted(kt) == sorted(all_topic_names()), "KafkaTopics and the registry differ"
    # What the code itself creates (ragstream.runtime.kafka_admin), without the local partition cap.
    created = {t.name: t for t in desired_topics(KafkaSettings(default_partitions=0))}
    for name, new in created.items():
        spec = kt[name]["spec"]
        assert kt[name]["metadata"]["labels"]["strimzi.io/cluster"]
        assert spec["partitions"] == new.num_partitions, name
        cfg = spec["config"]
        assert str(cfg["retention.ms"]) == new.topic_configs["retention.ms"], name
        compact = new.topic_configs.get("cleanup.policy") == "compact"
        assert (cfg["cleanup.policy"] == "compact") is compact, name
        assert spec["replicas"] >= 3 and cfg["min.insync.replicas"] < spec["replicas"]
    for name, topic in TOPICS.items():
        assert kt[name]["spec"]["partitions"] == topic.partitions
        assert (kt[name]["spec"]["config"]["cleanup.policy"] == "compact") is topic.compacted
        assert kt[topic.dlq]["metadata"]["labels"]["ragstream.io/topic-kind"] == "dead-letter"
    assert kt["ragstream.ingest.source-changes.v1"]["spec"]["config"]["cleanup.policy"] == "compact"


def test_kafka_cluster_is_kraft_with_node_pools(docs: list) -> None:
    (kafka,) = _kind(docs, "Kafka")
    assert "zookeeper" not in kafka["spec"]
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    pools = _kind(docs, "KafkaNodePool")
    assert {r for p in pools for r in p["spec"]["roles"]} == {"controller", "broker"}
    assert all(p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for p in pools)
    assert all(
        t["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        for t in _kind(docs, "KafkaTopic")
    )
    # The clients dial Strimzi's bootstrap Service of this cluster.
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap:9092"
    assert {
        s["spec"]["triggers"][0]["metadata"]["bootstrapServers"] for s in _kind(docs, "ScaledObject")
    } == {bootstrap}


def test_topic_prefix_applies_to_topics_triggers_and_groups() -> None:
    docs = manifests.documents(manifests.helm_template(set_values={"kafka.topicPrefix": "staging."}))
    names = {d["spec"]["topicName"] for d in _kind(docs, "KafkaTopic")}
    assert names == {f"staging.{n}" for n in all_topic_names()}
    for so in _kind(docs, "ScaledObject"):
        meta = so["spec"]["triggers"][0]["metadata"]
        assert meta["topic"].startswith("staging.") and meta["consumerGroup"].startswith("staging.ragstream.")
    env = {
        e["name"]: e.get("value")
        for d in _worker_deployments(docs)
        for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["RAGSTREAM_KAFKA__TOPIC_PREFIX"] == "staging."


def test_bench_reads_the_chart_thresholds_and_applies_kedas_formula() -> None:
    from bench.scaling import Scaling, chart_scaling

    scaling = chart_scaling()
    assert set(scaling) == set(CONSUMERS)
    for name, sc in scaling.items():
        assert sc.partitions == TOPICS[CONSUMERS[name].topic].partitions
    sc = Scaling(
        lag_threshold=10,
        activation_lag_threshold=5,
        min_replicas=0,
        max_replicas=4,
        partitions=6,
        polling_interval_s=15,
        cooldown_s=300,
    )
    assert [sc.replicas(lag) for lag in (0, 5, 6, 10, 11, 35, 1000)] == [0, 0, 1, 1, 2, 4, 4]
    wide = Scaling(10, 0, 1, 12, 6, 15, 300)  # maxReplicaCount above partitions: partitions win
    assert [wide.replicas(lag) for lag in (0, 1, 60, 61, 10_000)] == [1, 1, 6, 6, 6]
