"""Fair admission (pure `Admission.check` over the hub's per-tenant counts), strict Last-Event-ID parsing,
and where worker /metrics binds (CLI default, run_worker, the chart's pod-IP override)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy.tools import manifests
from gateway.auth import Principal
from gateway.backpressure import Admission
from gateway.hub import AnswerHub
from gateway.service import AFTER_FINAL, RejectedError, parse_last_event_id
from ragstream.settings import ServingSettings
from schemas.serving import QueryFailed
from schemas.topics import CONSUMERS

CFG = ServingSettings(max_inflight=100, max_lag=1000, tenant_max_inflight=10, tenant_lag_share=0.25)


def principal(tenant: str) -> Principal:
    return Principal(tenant_id=tenant, subject="alice", groups=("everyone",), auth_method="jwt")


def admission(counts: dict[str, int], lag: int = 0) -> Admission:
    adm = Admission(CFG, lambda: sum(counts.values()), tenants=lambda: counts)
    adm.lag = lag
    return adm


def test_tenant_at_its_limit_is_refused_others_admitted() -> None:
    adm = admission({"a": 10, "b": 2})
    r = adm.check("interactive", "a")
    assert r is not None and r.reason == "tenant_inflight" and r.retry_after_s >= 1
    assert adm.check("interactive", "b") is None and adm.check("interactive", "c") is None
    assert adm.check("batch", "b") is None
    assert adm.check("batch", "a").reason == "tenant_inflight"  # type: ignore[union-attr]
    assert admission({"a": 5}).check("batch", "a").reason == "tenant_inflight"  # type: ignore[union-attr]
    assert admission({"a": 4}).check("batch", "a") is None


def test_under_lag_only_tenants_over_their_share_are_refused() -> None:
    lag = int(CFG.tenant_lag_share * CFG.max_lag) + 1  # 251: over the tenant share, under max_lag
    adm = admission({"a": 9, "b": 1}, lag)
    r = adm.check("interactive", "a")  # 9 > 10 / 2
    assert r is not None and r.reason == "tenant_lag" and r.retry_after_s == 1
    assert adm.check("interactive", "b") is None and adm.check("interactive", "new") is None
    # A newcomer counts: a has 6 of 8 among three tenants.
    assert admission({"a": 6, "b": 2}, lag).check("interactive", "a").reason == "tenant_lag"  # type: ignore[union-attr]
    # Equal shares are not over the share; a lone tenant is never over its own share.
    assert admission({"a": 3, "b": 3}, lag).check("interactive", "a") is None
    assert admission({"a": 9}, lag).check("interactive", "a") is None
    # Below the tenant share of the lag nobody is refused for it.
    assert admission({"a": 9, "b": 1}, lag - 2).check("interactive", "a") is None
    # Batch queries yield at half the lag share.
    assert admission({"a": 4, "b": 1}, 130).check("batch", "a").reason == "tenant_lag"  # type: ignore[union-attr]
    assert admission({"a": 4, "b": 1}, 130).check("interactive", "a") is None


def test_global_limits_remain_the_last_resort() -> None:
    many = {f"t{i}": 5 for i in range(20)}
    assert admission(many).check("interactive", "new").reason == "inflight"  # type: ignore[union-attr]
    r = admission({"a": 1}, 3000).check("interactive", "b")
    assert r is not None and r.reason == "lag" and r.retry_after_s == 3
    # Without a tenant (old callers) only the global limits apply.
    assert admission({"a": 50}).check("interactive") is None


def test_rejection_details_stay_out_of_client_messages() -> None:
    r = admission({"a": 10}).check("interactive", "a")
    assert r is not None and "10" in r.detail  # for the log
    err = RejectedError(429, r.reason, internal=r.detail)
    assert "10" not in err.message and err.info("cid").model_dump() == {
        "code": "tenant_inflight",
        "message": err.message,
        "correlation_id": "cid",
    }
    with pytest.raises(ValueError, match="unknown error code"):
        RejectedError(500, "RemoteProtocolError: peer closed")


async def test_hub_counts_pending_queries_per_tenant() -> None:
    hub = AnswerHub()
    for i in range(3):
        hub.register(f"a{i}", principal("a"), "interactive", 30, f"cid-a{i}")
    hub.register("b0", principal("b"), "interactive", 30)
    assert hub.inflight_by_tenant() == {"a": 3, "b": 1} and hub.inflight() == 4
    hub.dispatch(QueryFailed(tenant_id="a", query_id="a0", subject="alice", stage="generation", reason="x"))
    hub.dispatch(QueryFailed(tenant_id="a", query_id="a0", subject="alice", stage="generation", reason="x"))
    hub.forget("b0")
    hub.forget("b0")
    assert hub.inflight_by_tenant() == {"a": 2} and hub.inflight() == 2
    hub.register("late", principal("a"), "interactive", 0.0, "cid-late")
    await asyncio.sleep(0.01)
    hub.sweep()  # past its deadline: finished by the gateway, released
    assert hub.inflight_by_tenant() == {"a": 2}
    assert hub.records["late"].final.correlation_id == "cid-late"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "after"),
    [(None, -1), ("", -1), ("0", 0), ("17", 17), ("9" * 18, 10**18 - 1), ("final", AFTER_FINAL)],
)
def test_last_event_id_accepted(value: str | None, after: int) -> None:
    assert parse_last_event_id(value) == after


@pytest.mark.parametrize(
    "value", ["²", "٣", "5" * 5000, "9" * 19, "-1", "+1", "1.5", "0x1", "1_0", " 1", "1 ", "Final", "\x00"]
)
def test_last_event_id_refused(value: str) -> None:
    with pytest.raises(RejectedError) as ei:
        parse_last_event_id(value)
    assert ei.value.status == 400 and ei.value.reason == "bad_request" and value not in ei.value.message


# --- worker /metrics bind ----------------------------------------------------------------------------------


def test_worker_cli_binds_metrics_to_the_setting_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from application import compose as runtime_app
    from application.cli import common
    from application.cli.main import app

    seen: dict[str, Any] = {}

    async def fake_run_worker(name: str, settings: Any, **kw: Any) -> None:
        seen.update(kw, name=name)

    monkeypatch.setattr(runtime_app, "run_worker", fake_run_worker)
    monkeypatch.delenv("RAGSTREAM_TELEMETRY__METRICS_HOST", raising=False)
    common.settings.cache_clear()
    runner = CliRunner()
    res = runner.invoke(app, ["worker", "retrieval", "--metrics-port", "9400"])
    assert res.exit_code == 0, res.output
    assert seen == {"name": "retrieval", "metrics_port": 9400, "metrics_host": "127.0.0.1"}
    monkeypatch.setenv("RAGSTREAM_TELEMETRY__METRICS_HOST", "10.1.2.3")
    common.settings.cache_clear()
    res = runner.invoke(app, ["worker", "retrieval"])
    assert res.exit_code == 0, res.output
    assert seen["metrics_host"] == "10.1.2.3"
    res = runner.invoke(app, ["worker", "retrieval", "--metrics-host", "0.0.0.0"])
    assert res.exit_code == 0, res.output
    assert seen["metrics_host"] == "0.0.0.0"
    monkeypatch.delenv("RAGSTREAM_TELEMETRY__METRICS_HOST")
    common.settings.cache_clear()


async def test_run_worker_binds_metrics_where_told(monkeypatch: pytest.MonkeyPatch) -> None:
    from application import compose as runtime_app
    from ragstream.settings import Settings, TelemetrySettings

    binds: list[tuple[int, str]] = []

    class FakeWorker:
        group = "g"

        def __init__(self, *a: Any, **kw: Any) -> None: ...

        async def start(self) -> None: ...

        async def run(self) -> None: ...

        async def stop(self) -> None: ...

    async def no_topics(_cfg: Any) -> None: ...

    monkeypatch.setattr(runtime_app, "ensure_topics", no_topics)
    monkeypatch.setattr(runtime_app, "Producer", lambda *a, **kw: object())
    monkeypatch.setattr(
        runtime_app,
        "wire",
        lambda name, deps, _p: runtime_app.Wired(name, None, deps),  # type: ignore[arg-type]
    )
    monkeypatch.setattr(runtime_app, "Worker", FakeWorker)
    monkeypatch.setattr(runtime_app, "serve_health", lambda port, addr, _w: binds.append((port, addr)))
    await runtime_app.run_worker("retrieval", Settings(), metrics_port=9400)
    s = Settings(telemetry=TelemetrySettings(metrics_host="10.0.0.5"))
    await runtime_app.run_worker("retrieval", s, metrics_port=9401)
    await runtime_app.run_worker("retrieval", s, metrics_port=9402, metrics_host="0.0.0.0")
    await runtime_app.run_worker("retrieval", s)  # no port: no server
    assert binds == [(9400, "127.0.0.1"), (9401, "10.0.0.5"), (9402, "0.0.0.0")]


def test_chart_sets_the_metrics_host_to_the_pod_ip_for_every_worker() -> None:
    docs = manifests.documents(manifests.helm_template())
    workers = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"
    ]
    assert len(workers) == len(CONSUMERS)  # one Deployment per consumer of the registry
    for d in workers:
        [c] = d["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["RAGSTREAM_TELEMETRY__METRICS_HOST"]["valueFrom"] == {
            "fieldRef": {"fieldPath": "status.podIP"}
        }, d["metadata"]["name"]
