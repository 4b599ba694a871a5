"""Eval results as Prometheus series, for the quality dashboard and the regression / leak alerts.

An eval run is a short-lived Job, so its results are pushed to a Pushgateway when one is configured
(`RAGSTREAM_TELEMETRY__PUSHGATEWAY_URL`), grouped by job and set so each set's latest run replaces its
previous one. Labels: set and metric names (a bounded, curated list) and the generation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway


def results_registry(
    set_name: str,
    generation: str | None,
    metrics: Mapping[str, float],
    *,
    baseline: Mapping[str, float] | None = None,
    leaks: int | None = None,
) -> CollectorRegistry:
    """A registry holding one run's series (scores, the baseline they are compared with, leaks, time)."""
    reg = CollectorRegistry()
    gen = generation or "live"
    score = Gauge(
        "ragstream_eval_score", "Metric of the latest eval run", ["set", "metric", "generation"], registry=reg
    )
    for name, value in metrics.items():
        if isinstance(value, int | float):
            score.labels(set_name, name, gen).set(float(value))
    if baseline:
        base = Gauge(
            "ragstream_eval_baseline_score",
            "The previous run's value of each metric",
            ["set", "metric"],
            registry=reg,
        )
        for name, value in baseline.items():
            if isinstance(value, int | float):
                base.labels(set_name, name).set(float(value))
    if leaks is not None:
        Gauge(
            "ragstream_eval_leaks", "Leaks found by the leak suite", ["set", "generation"], registry=reg
        ).labels(set_name, gen).set(leaks)
    Gauge("ragstream_eval_last_run_timestamp_seconds", "When the set last ran", ["set"], registry=reg).labels(
        set_name
    ).set(time.time())
    return reg


def baseline_of(diff: Mapping[str, Any] | None) -> dict[str, float]:
    """The previous run's metrics, from a run's diff (empty on a set's first run)."""
    if not diff:
        return {}
    return {
        name: float(entry["previous"])
        for name, entry in diff.get("metrics", {}).items()
        if isinstance(entry.get("previous"), int | float)
    }


def push(url: str | None, set_name: str, registry: CollectorRegistry) -> bool:
    """Push to the Pushgateway at `url` (no-op without one); True when pushed."""
    if not url:
        return False
    push_to_gateway(url, job="ragstream-eval", grouping_key={"set": set_name}, registry=registry)
    return True
