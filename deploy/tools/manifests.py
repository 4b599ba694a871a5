"""Render the Helm chart and validate every manifest offline (no cluster, no internet at validation time).

    python deploy/tools/manifests.py            # render + validate, print a summary; exit 1 on any problem

Tools and schemas are cached outside the checkout, in ~/.cache/ragstream/tools (deploy/tools/fetch-tools.sh
fetches them once; scripts/bootstrap.sh calls it):

- Helm v3.22.0 renders the chart (`helm template`); kubeconform v0.8.0 validates (strict, JSON output).
- Kubernetes 1.37 schemas: the `kubernetes-validate` wheel (strict variant), copied with their `$id` dropped
  and their `/api/_definitions.json` refs made local, so nothing resolves to the web.
- KEDA (keda.sh/v1alpha1 ScaledObject, ScaledJob, TriggerAuthentication): the pydantic models of
  `cloudcoil-models-keda` (2.16.1.0: the newest release for Python < 3.14), exported as JSON Schema.
- Prometheus Operator (monitoring.coreos.com/v1 PrometheusRule): `cloudcoil-models-prometheus-operator`,
  the same way (0.80.1.0, also the newest for Python < 3.14).
- Strimzi 0.49.0 (kafka.strimzi.io/v1beta2 Kafka, KafkaNodePool, KafkaTopic, KafkaUser): the CRDs generated
  from Strimzi's own Java API model (io.strimzi:api + io.strimzi:crd-generator from Maven Central),
  openAPIV3Schema converted.

CRD schemas and pydantic exports rarely forbid unknown keys; the conversion adds `additionalProperties: false`
to every object that declares `properties` and does not preserve unknown fields, so a misspelt key fails.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ragstream"
FETCH = ROOT / "deploy" / "tools" / "fetch-tools.sh"
KUBE_VERSION = "1.37.0"
STRIMZI_VERSION = "0.49.0"
SCHEMA_FORMAT = 4  # bump when the conversion below (or the set of CRDs) changes


def tools_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ragstream" / "tools"


def ensure_tools() -> Path:
    """Helm, kubeconform and the Strimzi CRDs in the cache; fetched only when missing."""
    t = tools_dir()
    have = all(
        p.exists()
        for p in (
            t / "bin" / "helm",
            t / "bin" / "kubeconform",
            t / "strimzi" / STRIMZI_VERSION / "kafkatopic.yaml",
            t / "strimzi" / STRIMZI_VERSION / "kafka.yaml",
            t / "strimzi" / STRIMZI_VERSION / "kafkanodepool.yaml",
            t / "strimzi" / STRIMZI_VERSION / "kafkauser.yaml",
        )
    )
    if not have:
        subprocess.run(["bash", str(FETCH)], check=True, stdout=subprocess.DEVNULL)
    return t


# --- schema conversion --------------------------------------------------------------------------------------


def strictify(node: Any) -> Any:
    """OpenAPI v3 (CRD) or pydantic JSON Schema -> strict JSON Schema for kubeconform."""
    if isinstance(node, list):
        return [strictify(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strictify(v) for k, v in node.items() if k != "$id"}
    if out.pop("x-kubernetes-int-or-string", False):
        for k in ("type", "format"):
            out.pop(k, None)
        out["anyOf"] = [{"type": "string"}, {"type": "integer"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserve = out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def _with_object_header(schema: dict[str, Any]) -> dict[str, Any]:
    """Every resource may carry apiVersion, kind and metadata even where a CRD schema omits them."""
    props = schema.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props.setdefault("metadata", {"type": "object"})
    return schema


def crd_schemas(crd: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{"<group>/<kind>_<version>.json": schema} for each served version of one CRD."""
    spec = crd["spec"]
    kind = spec["names"]["kind"].lower()
    out = {}
    for v in spec["versions"]:
        if not v.get("served", True):
            continue
        schema = strictify(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
        out[f"{spec['group']}/{kind}_{v['name']}.json"] = _with_object_header(schema)
    return out


def pydantic_schema(model: Any) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return _with_object_header(strictify(schema))


def _model_schemas() -> dict[str, dict[str, Any]]:
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as promop

    return {
        "keda.sh/scaledobject_v1alpha1.json": pydantic_schema(keda.ScaledObject),
        "keda.sh/scaledjob_v1alpha1.json": pydantic_schema(keda.ScaledJob),
        "keda.sh/triggerauthentication_v1alpha1.json": pydantic_schema(keda.TriggerAuthentication),
        "monitoring.coreos.com/prometheusrule_v1.json": pydantic_schema(promop.PrometheusRule),
    }


def _core_source() -> Path:
    import kubernetes_validate

    return (
        Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBE_VERSION}-local-strict"
    )


def _versions_stamp() -> str:
    from importlib.metadata import version

    parts = [
        str(SCHEMA_FORMAT),
        KUBE_VERSION,
        STRIMZI_VERSION,
        version("kubernetes-validate"),
        version("cloudcoil-models-keda"),
        version("cloudcoil-models-prometheus-operator"),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def ensure_schemas() -> Path:
    """Build (once per versions stamp) the schema tree kubeconform reads: core/ and crd/<group>/."""
    t = ensure_tools()
    dest = t / "schemas" / _versions_stamp()
    if (dest / ".complete").exists():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "core").mkdir(parents=True)
    for src in _core_source().glob("*.json"):
        text = src.read_text()
        text = text.replace('"/api/_definitions.json#', '"_definitions.json#')
        data = json.loads(text)
        data.pop("$id", None)
        (tmp / "core" / src.name).write_text(json.dumps(data))
    crds: dict[str, dict[str, Any]] = {}
    for name in ("kafka", "kafkanodepool", "kafkatopic", "kafkauser"):
        crds.update(
            crd_schemas(yaml.safe_load((t / "strimzi" / STRIMZI_VERSION / f"{name}.yaml").read_text()))
        )
    crds.update(_model_schemas())
    for rel, schema in crds.items():
        path = tmp / "crd" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(schema))
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


# --- rendering and validation -------------------------------------------------------------------------------


def helm_template(
    values: Iterable[Path] = (), set_values: Mapping[str, str] | None = None, release: str = "ragstream"
) -> str:
    """`helm template` of the chart; raises CalledProcessError (stderr attached) when rendering fails."""
    helm = ensure_tools() / "bin" / "helm"
    argv = [str(helm), "template", release, str(CHART), "--namespace", "ragstream"]
    argv += ["--kube-version", KUBE_VERSION]
    for v in values:
        argv += ["-f", str(v)]
    for k, v in (set_values or {}).items():
        argv += ["--set", f"{k}={v}"]
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode:
        raise subprocess.CalledProcessError(res.returncode, argv, res.stdout, res.stderr)
    return res.stdout


def documents(stream: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(stream) if d]


def kubeconform(stream: str) -> dict[str, Any]:
    """Validate a YAML stream; returns kubeconform's JSON report (resources + summary)."""
    t = ensure_tools()
    schemas = ensure_schemas()
    argv = [
        str(t / "bin" / "kubeconform"),
        "-strict",
        "-summary",
        "-output",
        "json",
        "-kubernetes-version",
        KUBE_VERSION,
        "-schema-location",
        str(schemas / "core" / "{{ .ResourceKind }}{{ .KindSuffix }}.json"),
        "-schema-location",
        str(schemas / "crd" / "{{ .Group }}" / "{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"),
        "-",
    ]
    res = subprocess.run(argv, input=stream, capture_output=True, text=True)
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"kubeconform failed (rc {res.returncode}): {res.stderr or res.stdout}") from exc


def problems(report: Mapping[str, Any]) -> list[str]:
    """Every resource that is not valid, including the ones kubeconform skipped (no schema) or errored on."""
    out = []
    for r in report.get("resources", []):
        if r.get("status") != "statusValid":
            out.append(f"{r.get('kind')}/{r.get('name')}: {r.get('status')} {r.get('msg', '')}".strip())
    s = report.get("summary", {})
    if (s.get("invalid", 0) or s.get("errors", 0) or s.get("skipped", 0)) and not out:
        out.append(f"summary: {s}")
    return out


def main() -> int:
    stream = helm_template()
    alerts = (ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text()
    report = kubeconform(stream + "\n---\n" + alerts)
    bad = problems(report)
    kinds: dict[str, int] = {}
    for d in documents(stream):
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    print(json.dumps({"kinds": kinds, "summary": report.get("summary"), "problems": bad}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
