"""Pure parts of the opt-in KEDA suite (bench.keda_real, bench.k8s_local): build modules, REST paths,
quantities, the chart selection and the timeline figures. The suite itself never runs in CI."""

from __future__ import annotations

import pytest

from bench.k8s_local import (
    BINARIES,
    MODULES,
    k8s_gomod,
    keda_gomod,
    parse_build_times,
    parse_quantity,
    resource_path,
    staging_version,
)
from bench.keda_real import (
    PAUSE,
    Reading,
    Target,
    Tick,
    chart_overrides,
    consumer_report,
    drained_at,
    paused,
    placeholder_secret,
    referenced_secrets,
    scale_up_s,
    scaled_back_at,
    select,
    targets,
)

pytestmark = pytest.mark.unit


def test_k8s_gomod_points_staging_at_published_modules() -> None:
    upstream = """module k8s.io/kubernetes
replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/sample-apiserver => ./staging/src/k8s.io/sample-apiserver
\tgithub.com/x/y => github.com/x/z v1.0.0
)
"""
    out = k8s_gomod(upstream, "v1.37.2")
    assert "require k8s.io/kubernetes v1.37.2" in out
    assert "\tk8s.io/api => k8s.io/api v0.37.2" in out
    assert "sample-apiserver" not in out  # not published at every version, unused
    assert "github.com/x/y" not in out  # only the staging replaces are restated
    assert staging_version("v1.37.2") == "v0.37.2"


def test_keda_gomod_copies_non_local_replaces() -> None:
    upstream = "module github.com/kedacore/keda/v2\n\nreplace github.com/a/b => github.com/c/b v0.1.0\n"
    out = keda_gomod(upstream, "v2.21.0")
    assert "require github.com/kedacore/keda/v2 v2.21.0" in out
    assert "replace github.com/a/b => github.com/c/b v0.1.0" in out


def test_every_binary_has_its_module() -> None:
    names = {m.name for m in MODULES}
    assert {b.module for b in BINARIES} <= names
    assert {b.name for b in BINARIES} >= {"kube-apiserver", "keda-operator", "keda-metrics-apiserver", "kwok"}


def test_build_times_keep_the_first_successful_run_per_step() -> None:
    text = "etcd 200s rc=0 T\nkwok 90s rc=1 T\nkwok 80s rc=0 T\netcd 3s rc=0 T\nnoise line\n"
    assert parse_build_times(text) == {"etcd": 200.0, "kwok": 80.0}


@pytest.mark.parametrize(
    ("value", "expected"), [("1200", 1200.0), ("1500m", 1.5), ("2k", 2000.0), ("1Ki", 1024.0)]
)
def test_quantities(value: str, expected: float) -> None:
    assert parse_quantity(value) == expected


def test_resource_paths() -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": "ns"}}
    assert resource_path(dep) == "/apis/apps/v1/namespaces/ns/deployments/w"
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}
    assert resource_path(node) == "/api/v1/nodes/n"
    so = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "s"}}
    assert resource_path(so, "x") == "/apis/keda.sh/v1alpha1/namespaces/x/scaledobjects/s"


def _scaled_object(name: str, threshold: int = 10, min_r: int = 1) -> dict:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": f"rs-{name}", "labels": {"ragstream.io/consumer": name}},
        "spec": {
            "scaleTargetRef": {"name": f"rs-{name}"},
            "minReplicaCount": min_r,
            "maxReplicaCount": 6,
            "triggers": [{"metadata": {"topic": "t", "consumerGroup": "g", "lagThreshold": str(threshold)}}],
        },
    }


def test_select_takes_the_consumers_under_test_only() -> None:
    dep = {
        "kind": "Deployment",
        "metadata": {"name": "rs-embedder", "labels": {"ragstream.io/consumer": "embedder"}},
    }
    other = {"kind": "Deployment", "metadata": {"name": "rs-gateway", "labels": {}}}
    sa = {"kind": "ServiceAccount", "metadata": {"name": "rs"}}
    got = select([dep, other, sa, _scaled_object("embedder"), _scaled_object("generation")], ["embedder"])
    assert [d["metadata"]["name"] for d in got] == ["rs-embedder", "rs", "rs-embedder"]
    assert all(d["metadata"]["namespace"] == "ragstream" for d in got)
    t = targets(got)["embedder"]
    assert (t.deployment, t.lag_threshold, t.floor) == ("rs-embedder", 10, 1)


def test_pause_annotation_set_and_removed() -> None:
    so = _scaled_object("rerank")
    assert paused(so, 1)["metadata"]["annotations"] == {PAUSE: "1"}
    assert PAUSE not in paused(paused(so, 1), None)["metadata"]["annotations"]
    assert "annotations" not in so["metadata"]  # the rendered object is not changed


def test_overrides_are_image_broker_and_cooldown_only() -> None:
    got = chart_overrides("127.0.0.1:1", 20, ["rerank"])
    assert got["kafka.bootstrapServers"] == "127.0.0.1:1"
    assert got["workers.rerank.cooldownPeriod"] == "20"
    assert {k.split(".")[0] for k in got} == {"image", "kafka", "workerDefaults", "workers"}


def _ticks(rows: list[tuple[float, int, int, int]], phase: str = "keda") -> list[Tick]:
    """(t, normalizer lag, embedder lag, embedder ready); the chunker idle."""
    return [
        Tick(
            t,
            phase,
            {
                "normalizer": Reading(lag=a, ready=1),
                "chunker": Reading(lag=0),
                "embedder": Reading(lag=b, ready=r),
            },
        )
        for t, a, b, r in rows
    ]


def test_timeline_figures() -> None:
    ticks = _ticks(
        [(0, 50, 0, 1), (1, 10, 0, 1), (2, 0, 40, 1), (3, 0, 30, 2), (5, 0, 0, 2), (6, 0, 0, 1), (7, 0, 0, 1)]
    )
    # the embedder's lag 0 at t=0..1 does not count: its upstream still had work
    assert drained_at(ticks, "embedder", ["normalizer"], after=0) == 5
    assert scale_up_s(ticks, "embedder", threshold=10, floor=1) == 1.0
    assert scaled_back_at(ticks, "embedder", floor=1, after=5) == 6
    assert scale_up_s(ticks, "normalizer", threshold=1000, floor=1) is None


def test_scaled_back_needs_to_stay_at_the_floor() -> None:
    ticks = _ticks([(0, 0, 0, 1), (1, 0, 0, 2), (2, 0, 0, 2)])
    assert scaled_back_at(ticks, "embedder", floor=1, after=0) is None


def test_consumer_report() -> None:
    one = _ticks([(0, 5, 0, 1), (4, 0, 20, 1), (20, 0, 0, 1)], "one_replica")
    keda = _ticks([(30, 5, 0, 1), (32, 0, 20, 1), (33, 0, 15, 2), (40, 0, 0, 2), (70, 0, 0, 1)])
    target = Target("embedder", "rs-embedder", "rs-embedder", "t", "g", 10, 1, 6)
    marks = {"one_replica_documents": 0.0, "keda_documents": 30.0}
    got = consumer_report(target, one, keda, marks, marks)
    assert got["drain_s_one_replica"] == 20.0
    assert got["drain_s"] == 10.0
    assert got["max_replicas_seen"] == 2
    assert got["scale_up_s"] == 1.0
    assert got["scaled_back"] is True
    assert got["scaled_back_s"] == 30.0


def test_referenced_secrets_skip_optional_keys() -> None:
    env = [
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "weaviate-api-key"}}},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "llm-api-key", "optional": True}}},
        {"name": "C", "value": "plain"},
    ]
    dep = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"env": env}]}}}}
    assert referenced_secrets([dep]) == {"s": ["weaviate-api-key"]}
    assert placeholder_secret("s", ["k"])["stringData"] == {"k": "bench-placeholder"}
