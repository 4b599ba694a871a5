"""A real Kubernetes control plane with the real KEDA operator on loopback, for `bench.keda_real`.

No Docker and no kubelet: etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from the
published Go modules, kwok for one fake node (its pods turn Ready without running anything), KEDA's operator
and metrics adapter out of cluster (the aggregator reaches the adapter through an ExternalName Service).
The route, every flag and why, is the one verified in ../shared/recipes/keda-real-operator/README.md.

Everything is cached outside the checkout under ~/.cache/ragstream/keda-real (`cache_dir()`): build modules,
Go caches, binaries, kwok stages, KEDA CRDs; each build step's seconds are appended to logs/build-times.txt.
`build()` is idempotent (a binary already built at its pinned version is skipped). Processes are started in
their own sessions and stopped by recorded pid, never by name. The API is spoken over HTTPS with the admin
client certificate (server-side apply), so no kubectl is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import free_ports

K8S_VERSION = "v1.37.2"  # k8s.io/kubernetes; its staging modules are published as v0.37.2
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
KEDA_VERSION = "v2.21.0"
GO = shutil.which("go") or "/usr/local/go/bin/go"

Log = Callable[[str], None]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ragstream" / "keda-real"


# --- build modules ----------------------------------------------------------------------------------------
# `go install <cmd>@<version>` refuses modules whose go.mod has replace directives (kubernetes, etcd, keda
# all do). One tiny own module per upstream, requiring it and re-stating its replaces against published
# modules, builds them.


def staging_version(k8s_version: str) -> str:
    """k8s.io/kubernetes v1.37.2 publishes its staging modules (k8s.io/api, ...) as v0.37.2."""
    return "v0." + k8s_version.removeprefix("v1.")


def k8s_gomod(upstream: str, version: str = K8S_VERSION) -> str:
    """kubernetes replaces k8s.io/X with ./staging/src/k8s.io/X: point each at the published module instead
    (k8s.io/sample-* are not published at every version and none of the three binaries uses them)."""
    staged = []
    for line in upstream.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("./staging/src/"):
            if parts[0].startswith("k8s.io/sample-"):
                continue
            staged.append(f"\t{parts[0]} => {parts[0]} {staging_version(version)}")
    return "module kp/k8s\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes {}\n\nreplace (\n{}\n)\n".format(
        version, "\n".join(staged)
    )


def keda_gomod(upstream: str, version: str = KEDA_VERSION) -> str:
    """keda's replaces are not local paths: copy them verbatim (single lines and blocks)."""
    kept: list[str] = []
    in_block = False
    for line in upstream.splitlines():
        stripped = line.strip()
        if stripped.startswith("replace ("):
            in_block = True
        if in_block or stripped.startswith("replace "):
            kept.append(line)
        if in_block and stripped == ")":
            in_block = False
    head = f"module kp/keda\n\ngo 1.26.0\n\nrequire github.com/kedacore/keda/v2 {version}\n\n"
    return head + "\n".join(kept) + "\n"


def plain_gomod(name: str, module: str, version: str) -> str:
    return f"module kp/{name}\n\ngo 1.26.0\n\nrequire {module} {version}\n"


@dataclass(frozen=True)
class GoModule:
    name: str
    module: str
    version: str
    commands: tuple[str, ...]  # packages `go get` resolves (go.mod + go.sum, checked against sum.golang.org)
    gomod: Callable[[str, str], str] | None = None  # (upstream go.mod, version) -> own go.mod


@dataclass(frozen=True)
class Binary:
    name: str
    module: str  # GoModule.name
    package: str
    ldflags: str = "-s -w"


_K8S_LD = (
    f"-s -w -X k8s.io/component-base/version.gitVersion={K8S_VERSION} "
    f"-X k8s.io/component-base/version.gitMajor=1 "
    f"-X k8s.io/component-base/version.gitMinor={K8S_VERSION.split('.')[1]}"
)
_KEDA_LD = f"-s -w -X github.com/kedacore/keda/v2/version.Version={KEDA_VERSION.removeprefix('v')}"
MODULES = (
    GoModule("etcd", "go.etcd.io/etcd/server/v3", ETCD_VERSION, ("go.etcd.io/etcd/server/v3",)),
    GoModule(
        "k8s",
        "k8s.io/kubernetes",
        K8S_VERSION,
        tuple(
            f"k8s.io/kubernetes/cmd/{c}"
            for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
        ),
        k8s_gomod,
    ),
    GoModule("kwok", "sigs.k8s.io/kwok", KWOK_VERSION, ("sigs.k8s.io/kwok/cmd/kwok",)),
    GoModule(
        "keda",
        "github.com/kedacore/keda/v2",
        KEDA_VERSION,
        ("github.com/kedacore/keda/v2/cmd/operator", "github.com/kedacore/keda/v2/cmd/adapter"),
        keda_gomod,
    ),
)
BINARIES = (
    Binary("etcd", "etcd", "go.etcd.io/etcd/server/v3"),
    Binary("kube-apiserver", "k8s", "k8s.io/kubernetes/cmd/kube-apiserver", _K8S_LD),
    Binary("kube-controller-manager", "k8s", "k8s.io/kubernetes/cmd/kube-controller-manager", _K8S_LD),
    Binary("kube-scheduler", "k8s", "k8s.io/kubernetes/cmd/kube-scheduler", _K8S_LD),
    Binary("kwok", "kwok", "sigs.k8s.io/kwok/cmd/kwok"),
    Binary("keda-operator", "keda", "github.com/kedacore/keda/v2/cmd/operator", _KEDA_LD),
    Binary("keda-metrics-apiserver", "keda", "github.com/kedacore/keda/v2/cmd/adapter", _KEDA_LD),
)
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)


def parse_build_times(text: str) -> dict[str, float]:
    """`STEP SECONDSs rc=N WHEN` lines (the recipe's format) -> seconds of the first successful run of each
    step: what building the present cache cost (a later re-link from a warm cache is not a build)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1].endswith("s") and parts[2] == "rc=0":
            try:
                out.setdefault(parts[0], float(parts[1][:-1]))
            except ValueError:
                continue
    return out


class Builder:
    """Obtains the binaries into the cache; every step timed and logged."""

    def __init__(self, cache: Path, log: Log) -> None:
        self.cache = cache
        self.log = log
        self.bin = cache / "bin"
        self.times = cache / "logs" / "build-times.txt"
        self.env = {
            **os.environ,
            "GOFLAGS": "-buildvcs=false",
            "GOCACHE": str(cache / "cache" / "go-build"),
            "GOMODCACHE": str(cache / "cache" / "gomod"),
            "PATH": f"{os.environ.get('PATH', '')}:{Path(GO).parent}",
        }

    def _timed(self, step: str, argv: list[str], cwd: Path) -> None:
        t0 = time.monotonic()
        self.log(f"build {step}: {' '.join(argv[:3])} ...")
        with (self.cache / "logs" / f"build-{step}.log").open("ab") as out:
            rc = subprocess.run(
                argv, cwd=cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT, check=False
            )
        took = time.monotonic() - t0
        with self.times.open("a") as fh:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            fh.write(f"{step} {took:.0f}s rc={rc.returncode} {when}\n")
        if rc.returncode:
            raise RuntimeError(f"build step {step} failed (rc {rc.returncode}); see {out.name}")

    def _upstream_gomod(self, m: GoModule, cwd: Path) -> str:
        found = subprocess.run(
            [GO, "mod", "download", "-json", f"{m.module}@{m.version}"],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return Path(json.loads(found.stdout)["GoMod"]).read_text()

    def module(self, m: GoModule) -> None:
        d = self.cache / "mods" / m.name
        if (d / "go.sum").exists():  # resolved before: the go.mod/go.sum there are the pins
            return
        d.mkdir(parents=True, exist_ok=True)
        (d / "go.mod").write_text(plain_gomod(m.name, m.module, m.version))
        if m.gomod is not None:
            (d / "go.mod").write_text(m.gomod(self._upstream_gomod(m, d), m.version))
        self._timed(f"gen-{m.name}-mod", [GO, "get", *(f"{c}@{m.version}" for c in m.commands)], d)

    def binary(self, b: Binary) -> None:
        if (self.bin / b.name).exists():
            return
        self._timed(
            b.name,
            [GO, "build", "-ldflags", b.ldflags, "-o", str(self.bin / b.name), b.package],
            self.cache / "mods" / b.module,
        )

    def assets(self) -> None:
        """kwok's node/pod stages (the bare binary has none built in), KEDA's CRDs: from the module cache.
        Copied file by file, so an interrupted copy is completed next time."""
        gomod = Path(self.env["GOMODCACHE"])
        kwok = gomod / f"sigs.k8s.io/kwok@{KWOK_VERSION}/kustomize/stage"
        keda = gomod / f"github.com/kedacore/keda/v2@{KEDA_VERSION}/config/crd/bases"
        copies = [(kwok / rel, self.cache / "kwok-stages" / Path(rel).name) for rel in KWOK_STAGES]
        copies += [(f, self.cache / "keda-crds" / f.name) for f in sorted(keda.glob("*.yaml"))]
        for src, dst in copies:
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)

    def build(self) -> float:
        """Everything missing, in dependency order; returns the seconds this call spent."""
        t0 = time.monotonic()
        self.bin.mkdir(parents=True, exist_ok=True)
        self.times.parent.mkdir(parents=True, exist_ok=True)
        self.times.touch()
        for m in MODULES:
            wanted = [b for b in BINARIES if b.module == m.name]
            if (
                all((self.bin / b.name).exists() for b in wanted)
                and (self.cache / "mods" / m.name / "go.sum").exists()
            ):
                continue
            self.module(m)
            for b in wanted:
                self.binary(b)
        self.assets()
        return time.monotonic() - t0

    def cold_build_s(self) -> float:
        """What obtaining the cache cost, from the logged steps (0 when nothing was logged)."""
        return sum(parse_build_times(self.times.read_text()).values()) if self.times.exists() else 0.0


# --- the API --------------------------------------------------------------------------------------------

PLURALS = {
    "Namespace": "namespaces",
    "Node": "nodes",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    "Deployment": "deployments",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "ScaledObject": "scaledobjects",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "CustomResourceDefinition": "customresourcedefinitions",
    "APIService": "apiservices",
}
CLUSTER_SCOPED = {"Namespace", "Node", "CustomResourceDefinition", "APIService"}


def resource_path(obj: Mapping[str, Any], default_namespace: str = "default") -> str:
    """REST path of one object: /api/v1/... for the core group, /apis/GROUP/VERSION/... otherwise."""
    api_version = obj["apiVersion"]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    kind = obj["kind"]
    meta = obj["metadata"]
    if kind in CLUSTER_SCOPED:
        return f"{base}/{PLURALS[kind]}/{meta['name']}"
    ns = meta.get("namespace") or default_namespace
    return f"{base}/namespaces/{ns}/{PLURALS[kind]}/{meta['name']}"


def collection_path(obj: Mapping[str, Any], default_namespace: str = "default") -> str:
    return resource_path(obj, default_namespace).rsplit("/", 1)[0]


def parse_quantity(value: str) -> float:
    """A Kubernetes quantity as the external metrics API returns it ("1200", "1500m", "2k") -> float."""
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3}
    for suffix in sorted(suffixes, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * suffixes[suffix]
    return float(value)


class KubeApi:
    """kube-apiserver over HTTPS with the admin client certificate."""

    def __init__(self, server: str, pki: Path) -> None:
        tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        tls.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.http = httpx.Client(base_url=server, verify=tls, timeout=30.0)

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **params: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist (or the aggregated API cannot answer yet)."""
        r = self.http.get(path, params=params or None)
        if r.status_code in (404, 503):
            return None
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def ok(self, path: str) -> bool:
        try:
            return self.http.get(path).status_code == 200
        except httpx.HTTPError:
            return False

    def apply(self, obj: Mapping[str, Any], namespace: str = "default") -> None:
        """Server-side apply (KEDA's scaledjobs CRD is too big for a last-applied annotation)."""
        r = self.http.patch(
            resource_path(obj, namespace),
            params={"fieldManager": "ragstream-bench", "force": "true"},
            content=json.dumps(obj),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        if r.status_code >= 400:
            raise RuntimeError(
                f"apply {obj['kind']}/{obj['metadata']['name']}: {r.status_code} {r.text[:500]}"
            )

    def create(self, obj: Mapping[str, Any], namespace: str = "default") -> None:
        """POST (a Node keeps the status it is created with; apply would drop it)."""
        r = self.http.post(collection_path(obj, namespace), json=obj)
        if r.status_code >= 400 and r.status_code != 409:
            raise RuntimeError(
                f"create {obj['kind']}/{obj['metadata']['name']}: {r.status_code} {r.text[:500]}"
            )


def condition(obj: Mapping[str, Any] | None, kind: str) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def wait_for(what: str, timeout_s: float, check: Callable[[], bool], log: Log) -> None:
    """Poll on the wall clock (a blocking check cannot stretch the deadline into many timeouts)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{what} not ready within {timeout_s:.0f}s")
        time.sleep(0.5)
    log(f"ready: {what} ({time.monotonic() - t0:.1f}s)")


# --- PKI --------------------------------------------------------------------------------------------------

_SAN_APISERVER = (
    "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
    "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth"
)
# One certificate serves both ends of KEDA's mTLS gRPC (operator server, adapter client).
_SAN_KEDA = (
    "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:keda-operator.keda.svc,"
    "DNS:keda-operator.keda.svc.cluster.local,DNS:keda-metrics-apiserver.keda.svc\n"
    "extendedKeyUsage=serverAuth,clientAuth"
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _sign(d: Path, name: str, subject: str, ext: str, ca: str = "ca") -> None:
    _openssl(
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-subj",
        subject,
        "-out",
        f"{name}.csr",
        cwd=d,
    )
    (d / f"{name}.ext").write_text(ext + "\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-days", "30", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d,
    )  # fmt: skip


def make_pki(d: Path) -> None:
    """Cluster CA, front-proxy CA (the aggregator passes callers' identity to the adapter), apiserver,
    admin (system:masters), front-proxy client, KEDA's gRPC cert, service-account key pair."""
    if (d / "sa.pub").exists():
        return
    d.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "front-proxy-ca"):
        _openssl(
            "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
            "-subj", f"/CN=kp-{ca}", "-days", "30", "-out", f"{ca}.crt",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=d,
        )  # fmt: skip
    _sign(d, "apiserver", "/CN=kube-apiserver", _SAN_APISERVER)
    _sign(d, "admin", "/O=system:masters/CN=kp-admin", "extendedKeyUsage=clientAuth")
    _sign(d, "front-proxy-client", "/CN=front-proxy-client", "extendedKeyUsage=clientAuth", "front-proxy-ca")
    _sign(d, "keda", "/CN=keda-operator", _SAN_KEDA)
    keda = d / "keda"
    keda.mkdir(exist_ok=True)
    shutil.copyfile(d / "ca.crt", keda / "ca.crt")
    shutil.copyfile(d / "keda.crt", keda / "tls.crt")
    shutil.copyfile(d / "keda.key", keda / "tls.key")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def kubeconfig(server: str, pki: Path) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "kp", "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(pki / "admin.crt"),
                        "client-key": str(pki / "admin.key"),
                    },
                }
            ],
            "contexts": [{"name": "kp", "context": {"cluster": "kp", "user": "admin"}}],
            "current-context": "kp",
        }
    )


# --- processes --------------------------------------------------------------------------------------------


def rss_mb(pids: Iterable[int]) -> float:
    """Resident memory of these processes (VmRSS), MiB; gone ones count 0."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total / 1024


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s` (by the process's own pid; an exited one is fine)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    keda_health: int
    keda_metrics: int
    keda_grpc: int
    adapter: int
    adapter_metrics: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*free_ports(10))


class ControlPlane:
    """Start (in order, each waited for) and stop (by recorded pid, in reverse) the whole control plane,
    state under `run_dir` (deleted by the caller)."""

    def __init__(self, cache: Path, run_dir: Path, log: Log) -> None:
        self.bin = cache / "bin"
        self.cache = cache
        self.run = run_dir
        self.pki = run_dir / "pki"
        self.logs = run_dir / "logs"
        self.log = log
        self.ports = Ports.pick()
        self.server = f"https://127.0.0.1:{self.ports.apiserver}"
        self.kubeconfig = run_dir / "admin.kubeconfig"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.api: KubeApi | None = None

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def _start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as out:
            self.procs[name] = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # a Ctrl-C on the bench must not race our ordered stop
            )
        (self.run / f"{name}.pid").write_text(str(self.procs[name].pid))
        self.log(f"started {name} pid {self.procs[name].pid}")

    def _alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{name} exited (rc {proc.returncode}):\n{tail}")

    def _wait(self, what: str, timeout_s: float, check: Callable[[], bool], proc: str) -> None:
        def checked() -> bool:
            self._alive(proc)
            return check()

        wait_for(what, timeout_s, checked, self.log)

    def up(self) -> KubeApi:
        make_pki(self.pki)
        self.kubeconfig.write_text(kubeconfig(self.server, self.pki))
        self._etcd()
        self._apiserver()
        self.api = api = KubeApi(self.server, self.pki)
        self._wait("kube-apiserver /readyz", 240, lambda: api.ok("/readyz"), "kube-apiserver")
        self._controllers()
        self._kwok(api)
        self._keda(api)
        return api

    def _etcd(self) -> None:
        p = self.ports
        self._start(
            "etcd",
            [
                str(self.bin / "etcd"), "--name", "kp", "--data-dir", str(self.run / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{p.etcd}", "--advertise-client-urls", f"http://127.0.0.1:{p.etcd}",
                "--listen-peer-urls", f"http://127.0.0.1:{p.etcd_peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{p.etcd_peer}",
                "--initial-cluster", f"kp=http://127.0.0.1:{p.etcd_peer}",
            ],
        )  # fmt: skip

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{p.etcd}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self._wait("etcd", 60, healthy, "etcd")

    def _apiserver(self) -> None:
        c, p = self.pki, self.ports
        self._start(
            "kube-apiserver",
            [
                str(self.bin / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{p.etcd}",
                # Loopback only; no endpoint reconciler writing a loopback IP into the kubernetes Endpoints.
                "--bind-address=127.0.0.1", f"--secure-port={p.apiserver}", "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none", "--service-cluster-ip-range=10.96.0.0/16",
                f"--tls-cert-file={c / 'apiserver.crt'}", f"--tls-private-key-file={c / 'apiserver.key'}",
                f"--client-ca-file={c / 'ca.crt'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={c / 'sa.pub'}",
                f"--service-account-signing-key-file={c / 'sa.key'}",
                "--authorization-mode=Node,RBAC",
                # The aggregator proxies callers' identity to keda-metrics-apiserver (else anonymous: denied).
                f"--requestheader-client-ca-file={c / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={c / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={c / 'front-proxy-client.key'}",
                # The aggregator dials an ExternalName Service's host:port itself: no kube-proxy needed.
                "--enable-aggregator-routing=false",
            ],
        )  # fmt: skip

    def _controllers(self) -> None:
        k, c, p = str(self.kubeconfig), self.pki, self.ports
        common = [f"--kubeconfig={k}", f"--authentication-kubeconfig={k}", f"--authorization-kubeconfig={k}"]
        self._start(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"), *common,
                "--bind-address=127.0.0.1", f"--secure-port={p.controller_manager}", "--leader-elect=false",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={c / 'sa.key'}", f"--root-ca-file={c / 'ca.crt'}",
                # HPA sync every 5 s (default 15 s); the ScaledObject's own behavior governs scale-down.
                "--horizontal-pod-autoscaler-sync-period=5s",
                "--horizontal-pod-autoscaler-downscale-stabilization=10s",
            ],
        )  # fmt: skip
        self._start(
            "kube-scheduler",
            [
                str(self.bin / "kube-scheduler"),
                *common,
                "--bind-address=127.0.0.1",
                f"--secure-port={p.scheduler}",
                "--leader-elect=false",
            ],
        )

    def _kwok(self, api: KubeApi) -> None:
        stages = sorted((self.cache / "kwok-stages").glob("*.yaml"))
        config = self.run / "kwok.yaml"
        config.write_text("\n---\n".join(s.read_text() for s in stages))
        self._start(
            "kwok",
            [
                str(self.bin / "kwok"), f"--kubeconfig={self.kubeconfig}", f"--config={config}",
                "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--cidr=10.0.0.1/24", "--node-ip=10.0.0.1", "--node-lease-duration-seconds=40",
            ],
        )  # fmt: skip
        # Room for every worker's requests at maxReplicaCount (the chart asks up to 2 CPUs per replica).
        capacity = {"cpu": "96", "memory": "512Gi", "pods": "250"}
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": "kwok-node-0",
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": "kwok-node-0",
                        "kubernetes.io/os": "linux",
                    },
                },
                "status": {"allocatable": capacity, "capacity": capacity},
            }
        )
        self._wait(
            "node kwok-node-0 Ready",
            120,
            lambda: condition(api.get("/api/v1/nodes/kwok-node-0"), "Ready"),
            "kwok",
        )
        # Pods are refused until the controller-manager has created the default ServiceAccount.
        self._wait(
            "default ServiceAccount",
            120,
            lambda: api.get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            "kube-controller-manager",
        )

    def install_crds(self, api: KubeApi) -> list[str]:
        import yaml

        names = []
        for f in sorted((self.cache / "keda-crds").glob("*.yaml")):
            crd = yaml.safe_load(f.read_text())
            api.apply(crd)
            names.append(crd["metadata"]["name"])
        for name in names:
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            wait_for(
                f"CRD {name} Established", 60, lambda p=path: condition(api.get(p), "Established"), self.log
            )
        return names

    def _keda(self, api: KubeApi) -> None:
        c, p, k = self.pki / "keda", self.ports, str(self.kubeconfig)
        api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "keda"}})
        self.install_crds(api)
        env = {
            "KUBECONFIG": k,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": "keda",
            "POD_NAMESPACE": "keda",
            "WATCH_NAMESPACE": "",
        }
        self._start(
            "keda-operator",
            [
                str(self.bin / "keda-operator"), "--leader-elect=false", "--enable-cert-rotation=false",
                f"--cert-dir={c}", f"--ca-dir={c}",  # mTLS for the gRPC metrics service the adapter calls
                f"--metrics-bind-address=127.0.0.1:{p.keda_metrics}",
                f"--health-probe-bind-address=127.0.0.1:{p.keda_health}",
                f"--metrics-service-bind-address=127.0.0.1:{p.keda_grpc}", "--zap-log-level=info",
            ],
            env,
        )  # fmt: skip
        self._start(
            "keda-metrics-apiserver",
            [
                str(self.bin / "keda-metrics-apiserver"), "--bind-address=127.0.0.1",
                f"--secure-port={p.adapter}", f"--port={p.adapter_metrics}",
                f"--cert-dir={c}", f"--tls-cert-file={c / 'tls.crt'}",
                f"--tls-private-key-file={c / 'tls.key'}",
                f"--metrics-service-address=localhost:{p.keda_grpc}",
                f"--lister-kubeconfig={k}", f"--authentication-kubeconfig={k}",
                f"--authorization-kubeconfig={k}",
            ],
            env,
        )  # fmt: skip
        api.apply(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "keda-metrics-apiserver", "namespace": "keda"},
                # No kube-proxy: the aggregator resolves an ExternalName Service to host:port directly.
                "spec": {
                    "type": "ExternalName",
                    "externalName": "localhost",
                    "ports": [{"name": "https", "port": p.adapter, "targetPort": p.adapter}],
                },
            }
        )
        api.apply(
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": "v1beta1.external.metrics.k8s.io"},
                "spec": {
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "service": {"name": "keda-metrics-apiserver", "namespace": "keda", "port": p.adapter},
                    "insecureSkipTLSVerify": True,
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            }
        )
        self._wait(
            "APIService external.metrics Available",
            180,
            lambda: condition(
                api.get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io"),
                "Available",
            ),
            "keda-metrics-apiserver",
        )

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{p.keda_health}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self._wait("keda-operator /healthz", 120, healthy, "keda-operator")

    def down(self) -> None:
        if self.api is not None:
            self.api.close()
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            stop(proc)
            self.log(f"stopped {name}")
