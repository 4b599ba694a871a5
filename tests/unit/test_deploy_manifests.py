"""deploy/: the Helm chart renders and every manifest validates offline (Kubernetes 1.37, KEDA, Strimzi,
Prometheus Operator schemas, strict: unknown keys fail); the security, probe, network and settings rules hold;
dashboards and alert rules use metric names the code defines.

Tools and schemas come from ~/.cache/ragstream/tools (deploy/tools/fetch-tools.sh, which scripts/bootstrap.sh
runs); nothing here needs a cluster or the network once they are cached.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "tools"))

import manifests  # noqa: E402

from ragstream.settings import Settings  # noqa: E402
from schemas.topics import CONSUMERS  # noqa: E402

pytestmark = pytest.mark.unit

DEPLOY = ROOT / "deploy"
# Metrics the dashboards and alerts use that no code defines yet (eval results: evals/export.py).
PENDING_METRICS: set[str] = set()
# Metrics from other exporters (kube-state-metrics) the dashboards and alerts read.
EXTERNAL_METRIC_PREFIXES = ("kube_",)


@pytest.fixture(scope="module")
def rendered() -> str:
    return manifests.helm_template()


@pytest.fixture(scope="module")
def docs(rendered: str) -> list[dict[str, Any]]:
    return manifests.documents(rendered)


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def _pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return doc["spec"]["template"]["metadata"]["labels"]


WORKLOADS = ("Deployment", "Job", "CronJob")


# --- schema validation --------------------------------------------------------------------------------------


def test_chart_validates_against_kubernetes_keda_and_strimzi_schemas(rendered: str, docs: list) -> None:
    report = manifests.kubeconform(rendered)
    assert manifests.problems(report) == []
    summary = report["summary"]
    assert summary["valid"] == len(docs) > 40
    assert summary["skipped"] == 0 and summary["errors"] == 0
    kinds = {d["kind"] for d in docs}
    assert {
        "ScaledObject",
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "CronJob",
        "Job",
        "NetworkPolicy",
    } <= kinds
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Deployment"} <= kinds
    # Helm prints large numbers from values as floats (2.592e+09) unless templates cast them.
    assert not re.search(r"\d\.\d+e[+-]\d+", rendered)


def test_alert_rules_validate_against_the_prometheus_operator_schema() -> None:
    report = manifests.kubeconform((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    assert manifests.problems(report) == []
    assert report["summary"]["valid"] == 1


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ("  maxReplicaCount: 6\n", "  maxReplicaCounts: 6\n", "maxReplicaCounts"),  # KEDA, misspelt key
        ("  partitions: 6\n", '  partitions: "six"\n', "partitions"),  # Strimzi, wrong type
        ("  roles:\n", "  role:\n", "role"),  # Strimzi KafkaNodePool
        ("          resources:\n", "          resourcez:\n", "resourcez"),  # core Deployment
        ("  schedule:", "  schedul:", "schedul"),  # core CronJob
    ],
)
def test_the_validator_rejects_broken_manifests(rendered: str, old: str, new: str, expect: str) -> None:
    doc = next(d for d in rendered.split("\n---\n") if old in d)  # one document: one schema compile
    assert manifests.problems(manifests.kubeconform(doc)) == []
    bad = manifests.problems(manifests.kubeconform(doc.replace(old, new, 1)))
    assert len(bad) == 1 and expect in bad[0], bad


def test_unknown_kind_is_a_failure_not_a_skip() -> None:
    doc = "apiVersion: example.com/v1\nkind: Mystery\nmetadata: {name: x}\n"
    assert manifests.problems(manifests.kubeconform(doc))


def test_max_replicas_above_partitions_does_not_render() -> None:
    with pytest.raises(subprocess.CalledProcessError) as exc:
        manifests.helm_template(set_values={"workers.embedder.maxReplicaCount": "12"})
    assert "maxReplicaCount 12 > 6 partitions" in exc.value.stderr


def test_optional_parts_switch_off_and_still_validate() -> None:
    off = {
        "kafka.strimzi.enabled": "false",
        "topics.manage": "false",
        "modelServer.enabled": "false",
        "backup.enabled": "false",
        "jobs.ingestBatch.enabled": "false",
        "jobs.generationBuild.enabled": "false",
        "jobs.evalRun.enabled": "false",
    }
    stream = manifests.helm_template(set_values=off)
    kinds = {d["kind"] for d in manifests.documents(stream)}
    assert not kinds & {"Kafka", "KafkaTopic", "KafkaNodePool", "Job", "CronJob"}
    assert manifests.problems(manifests.kubeconform(stream)) == []


# --- pod rules ----------------------------------------------------------------------------------------------


def test_every_container_is_non_root_read_only_and_bounded(docs: list) -> None:
    checked = 0
    for d in docs:
        if d["kind"] not in WORKLOADS:
            continue
        pod = _pod_spec(d)
        assert pod["securityContext"]["runAsNonRoot"] is True, d["metadata"]["name"]
        assert pod.get("automountServiceAccountToken") is False, d["metadata"]["name"]
        for c in pod["containers"]:
            sc = c["securityContext"]
            name = f"{d['kind']}/{d['metadata']['name']}/{c['name']}"
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], name
            assert c["resources"]["limits"]["memory"], name
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), name
            checked += 1
    assert checked >= 12


def test_long_running_pods_have_probes_and_a_disruption_budget(docs: list) -> None:
    pdbs = _by_kind(docs, "PodDisruptionBudget")
    for d in _by_kind(docs, "Deployment"):
        for c in _pod_spec(d)["containers"]:
            assert c.get("livenessProbe") and c.get("readinessProbe"), d["metadata"]["name"]
        labels = _pod_labels(d)
        covering = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, d["metadata"]["name"]


def test_workers_probe_liveness_and_stop_inside_their_grace_period(docs: list) -> None:
    """Liveness is the stuck check (/livez), readiness the started check (/readyz), both on the worker's own
    metrics port; the shutdown bound is below the pod's grace period."""
    workers = [
        d
        for d in _by_kind(docs, "Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    ]
    assert workers
    for d in workers:
        spec = _pod_spec(d)
        (c,) = spec["containers"]
        assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert float(env["RAGSTREAM_WORKER__SHUTDOWN_TIMEOUT_S"]) < spec["terminationGracePeriodSeconds"]


def _settings_field(path: list[str]) -> bool:
    model: Any = Settings
    for part in path:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_settings_travel_as_ragstream_variables_that_exist(docs: list) -> None:
    """Every RAGSTREAM_* variable names a real Settings field (nested with __); secrets come from Secrets."""
    seen: set[str] = set()
    for d in docs:
        if d["kind"] not in WORKLOADS or "model-server" in d["metadata"]["name"]:
            continue
        for c in _pod_spec(d)["containers"]:
            for env in c["env"]:
                name = env["name"]
                if not name.startswith("RAGSTREAM_"):
                    continue
                seen.add(name)
                path = name.removeprefix("RAGSTREAM_").lower().split("__")
                assert _settings_field(path), f"{name} is not a ragstream.settings field"
                if re.search(r"API_KEY|SECRET|PASSWORD|API_KEYS", name):
                    assert "secretKeyRef" in env.get("valueFrom", {}), f"{name} must come from a Secret"
                    assert "value" not in env
    assert {
        "RAGSTREAM_KAFKA__BOOTSTRAP_SERVERS",
        "RAGSTREAM_WEAVIATE__API_KEY",
        "RAGSTREAM_AUTH__JWT_SECRET",
    } <= seen


# --- Kafka security -----------------------------------------------------------------------------------------

SECURED = {
    "kafka.bootstrapServers": "ragstream-kafka-bootstrap:9093",
    "kafka.port": "9093",
    "kafka.security.protocol": "SASL_SSL",
    "kafka.security.userSecret": "ragstream-app",
    "kafka.security.caSecret": "ragstream-cluster-ca-cert",
    "kafka.security.createUser": "true",
}


def _kafka_client_pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every workload that runs ragstream (all but the model server)."""
    return [
        (d["metadata"]["name"], _pod_spec(d))
        for d in docs
        if d["kind"] in WORKLOADS and "model-server" not in d["metadata"]["name"]
    ]


def _kafka_env(container: dict[str, Any]) -> dict[str, Any]:
    return {
        e["name"].removeprefix("RAGSTREAM_KAFKA__"): e.get("value", e.get("valueFrom"))
        for e in container["env"]
        if e["name"].startswith("RAGSTREAM_KAFKA__")
    }


def test_default_chart_connects_in_plaintext_without_security_mounts(docs: list) -> None:
    for name, pod in _kafka_client_pods(docs):
        (c, *_) = pod["containers"]
        env = _kafka_env(c)
        assert env["SECURITY_PROTOCOL"] == "PLAINTEXT", name
        assert not {"SASL_PASSWORD", "SSL_CAFILE"} & env.keys(), name
        assert not [v for v in pod["volumes"] if v["name"].startswith("kafka-")], name
    assert not _by_kind(docs, "KafkaUser") and not _by_kind(docs, "TriggerAuthentication")


def test_sasl_ssl_values_wire_the_strimzi_user_and_cluster_ca_into_every_kafka_client() -> None:
    stream = manifests.helm_template(set_values=SECURED)
    assert manifests.problems(manifests.kubeconform(stream)) == []
    docs = manifests.documents(stream)
    pods = _kafka_client_pods(docs)
    assert {n for n, _ in pods} >= {"ragstream-gateway", "ragstream-embedder", "ragstream-generation"}
    for name, pod in pods:
        (c, *_) = pod["containers"]
        env = _kafka_env(c)
        assert env["SECURITY_PROTOCOL"] == "SASL_SSL" and env["SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert env["SASL_USERNAME"] == "ragstream-app", name
        assert env["SASL_PASSWORD"] == {"secretKeyRef": {"name": "ragstream-app", "key": "password"}}, name
        assert env["SSL_CAFILE"] == "/etc/ragstream/kafka/ca/ca.crt", name
        assert {"name": "kafka-ca", "mountPath": "/etc/ragstream/kafka/ca", "readOnly": True} in c[
            "volumeMounts"
        ], name
        (ca,) = [v for v in pod["volumes"] if v["name"] == "kafka-ca"]
        assert ca["secret"] == {
            "secretName": "ragstream-cluster-ca-cert",
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
        }
        assert all(_settings_field(["kafka", k.lower()]) for k in env), name
    (user,) = _by_kind(docs, "KafkaUser")
    assert user["metadata"]["name"] == "ragstream-app"
    assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == "ragstream"
    (kafka,) = _by_kind(docs, "Kafka")
    tls = next(li for li in kafka["spec"]["kafka"]["listeners"] if li["name"] == "tls")
    assert tls["authentication"] == {"type": "scram-sha-512"} and tls["port"] == 9093
    (auth,) = _by_kind(docs, "TriggerAuthentication")
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {"password": ("ragstream-app", "password"), "ca": ("ragstream-cluster-ca-cert", "ca.crt")}
    assert auth["spec"]["env"][0]["name"] == "RAGSTREAM_KAFKA__SASL_USERNAME"
    for so in _by_kind(docs, "ScaledObject"):
        (trigger,) = so["spec"]["triggers"]
        assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
        assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
        assert trigger["metadata"]["bootstrapServers"] == "ragstream-kafka-bootstrap:9093"


def test_mutual_tls_values_mount_the_client_certificate() -> None:
    stream = manifests.helm_template(set_values={**SECURED, "kafka.security.protocol": "SSL"})
    assert manifests.problems(manifests.kubeconform(stream)) == []
    docs = manifests.documents(stream)
    for name, pod in _kafka_client_pods(docs):
        (c, *_) = pod["containers"]
        env = _kafka_env(c)
        assert env["SSL_CERTFILE"] == "/etc/ragstream/kafka/user/user.crt", name
        assert env["SSL_KEYFILE"] == "/etc/ragstream/kafka/user/user.key", name
        assert not any(k.startswith("SASL_") for k in env), name
        (user_vol,) = [v for v in pod["volumes"] if v["name"] == "kafka-user"]
        assert user_vol["secret"]["secretName"] == "ragstream-app"
        assert user_vol["secret"]["defaultMode"] == 0o440
    (user,) = _by_kind(docs, "KafkaUser")
    assert user["spec"]["authentication"] == {"type": "tls"}


def test_sasl_without_the_user_secret_does_not_render() -> None:
    with pytest.raises(subprocess.CalledProcessError) as exc:
        manifests.helm_template(set_values={"kafka.security.protocol": "SASL_SSL"})
    assert "kafka.security.userSecret is required" in exc.value.stderr


# --- network ------------------------------------------------------------------------------------------------


def test_network_policies_expose_only_the_gateway(docs: list) -> None:
    pols = {
        p["metadata"]["name"].removeprefix("ragstream-"): p["spec"] for p in _by_kind(docs, "NetworkPolicy")
    }
    deny = pols["default-deny"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    open_ingress = [n for n, p in pols.items() for rule in p.get("ingress", []) if "from" not in rule]
    assert open_ingress == ["gateway"]
    # Workers: egress only to DNS, Kafka, the OTLP collector and Weaviate (+ the model server: llm clients).
    workers = pols["workers"]
    assert workers["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    peers = [peer["podSelector"]["matchLabels"] for rule in workers["egress"] for peer in rule["to"]]
    assert peers == [
        {"k8s-app": "kube-dns"},
        {"strimzi.io/cluster": "ragstream", "strimzi.io/kind": "Kafka"},
        {"app.kubernetes.io/name": "opentelemetry-collector"},
        {"app": "weaviate"},
    ]
    llm = pols["llm-clients"]
    assert [r["ports"][0]["port"] for r in llm["egress"]] == [8000]
    llm_clients = [
        d["metadata"]["name"]
        for d in _by_kind(docs, "Deployment")
        if _pod_labels(d).get("ragstream.io/llm-client") == "true"
    ]
    assert llm_clients == ["ragstream-generation", "ragstream-verifier"]
    services = {s["metadata"]["name"]: s["spec"]["type"] for s in _by_kind(docs, "Service")}
    assert set(services.values()) == {"ClusterIP"}


# --- Weaviate, compose --------------------------------------------------------------------------------------

# Top-level keys of the official Weaviate chart's values.yaml (weaviate-helm 17.x) this file may set.
WEAVIATE_CHART_KEYS = {
    "image", "command", "args", "initContainers", "replicas", "podManagementPolicy", "updateStrategy",
    "resources", "securityContext", "containerSecurityContext", "serviceAccountName", "clusterDomain",
    "storage", "service", "grpcService", "mcp", "serviceMonitor", "startupProbe", "livenessProbe",
    "readinessProbe", "terminationGracePeriodSeconds", "authentication", "authorization", "query_defaults",
    "debug", "namespaces", "env", "envSecrets", "offload", "usage", "backups", "collectionExport", "modules",
    "custom_config_map", "runtime_overrides", "annotations", "extraVolumeMounts", "extraVolumes",
    "nodeSelector", "tolerations", "hostAliases", "affinity", "priorityClassName", "globalPriorityClassName",
    "podDisruptionBudgets",
}  # fmt: skip


def test_weaviate_values_replicate_back_up_and_take_keys_from_secrets() -> None:
    v = yaml.safe_load((DEPLOY / "weaviate" / "values.yaml").read_text())
    assert set(v) <= WEAVIATE_CHART_KEYS, set(v) - WEAVIATE_CHART_KEYS
    assert v["image"]["tag"] == Settings().stack.weaviate_version == "1.39.0"
    assert v["replicas"] >= 3 and int(v["env"]["REPLICATION_MINIMUM_FACTOR"]) == 3
    assert v["authentication"]["anonymous_access"]["enabled"] is False
    assert v["env"]["AUTHENTICATION_APIKEY_ENABLED"] == "true"
    assert "AUTHENTICATION_APIKEY_ALLOWED_KEYS" in v["envSecrets"]
    assert "AUTHENTICATION_APIKEY_ALLOWED_KEYS" not in v["env"]
    assert v["backups"]["s3"]["enabled"] is True and v["backups"]["s3"]["envSecrets"]
    assert v["podDisruptionBudgets"]["weaviate"]["enabled"] is True
    assert v["service"]["type"] == v["grpcService"]["type"] == "ClusterIP"


def test_compose_runs_the_stack_and_every_worker() -> None:
    c = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    s = c["services"]
    assert s["weaviate"]["image"].endswith(":1.39.0")
    assert "backup-filesystem" in s["weaviate"]["environment"]["ENABLE_MODULES"]
    assert s["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert "llama.cpp" in s["llm"]["image"]
    for name in CONSUMERS:
        assert s[name]["command"][:2] == ["worker", name]
        assert s[name]["read_only"] is True and s[name]["user"] == "10001:10001"
    assert s["gateway"]["command"][:2] == ["gateway", "serve"]
    published = [p for svc in s.values() for p in svc.get("ports", [])]
    assert all(p.startswith("127.0.0.1:") for p in published)


# --- dashboards and alerts use real metric names ------------------------------------------------------------


def _defined_metrics() -> set[str]:
    """Sample names of every prometheus_client metric the code defines (Counter -> _total, ...)."""
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(ragstream_\w+)\"", re.S)
    out: set[str] = set()
    for top in ("ragstream", "consumers", "gateway", "evals", "producers"):
        for path in (ROOT / top).rglob("*.py"):
            for kind, name in pattern.findall(path.read_text()):
                base = name.removesuffix("_total")
                out |= {
                    "Counter": {f"{base}_total"},
                    "Gauge": {name},
                    "Histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"},
                    "Summary": {name, f"{name}_sum", f"{name}_count"},
                }[kind]
    return out


def _referenced(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:ragstream|kube)_[a-z0-9_]+\b", expr))


def _dashboard_exprs() -> dict[str, list[str]]:
    out = {}
    for path in sorted((DEPLOY / "grafana").glob("*.json")):
        dash = json.loads(path.read_text())
        out[dash["uid"]] = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    return out


def test_dashboards_cover_serving_ingestion_quality_tenants_with_defined_metrics() -> None:
    exprs = _dashboard_exprs()
    assert set(exprs) == {
        "ragstream-serving",
        "ragstream-ingestion",
        "ragstream-quality",
        "ragstream-tenants",
    }
    known = _defined_metrics() | PENDING_METRICS
    for uid, lst in exprs.items():
        assert lst, uid
        for e in lst:
            missing = {
                m for m in _referenced(e) if m not in known and not m.startswith(EXTERNAL_METRIC_PREFIXES)
            }
            assert not missing, f"{uid}: {missing} in {e}"
            assert "tenant_id" not in e and 'tenant="' not in e


def test_alerts_cover_the_issue_list_with_defined_metrics() -> None:
    rule = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert {
        "RagstreamInteractiveP95High",
        "RagstreamBatchP95High",
        "RagstreamFreshnessP95High",
        "RagstreamDeadLetterRateHigh",
        "RagstreamConsumerLagHigh",
        "RagstreamLeakSuiteFailed",
        "RagstreamEvalRegression",
    } <= alerts
    known = _defined_metrics() | PENDING_METRICS
    for r in rules:
        refs = _referenced(r["expr"])  # recording-rule names (ragstream:...) do not match
        missing = {m for m in refs if m not in known and not m.startswith(EXTERNAL_METRIC_PREFIXES)}
        assert not missing, f"{r.get('alert') or r.get('record')}: {missing}"
