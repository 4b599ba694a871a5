"""Eval results become the Prometheus series the quality dashboard and the regression/leak alerts read."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from prometheus_client import generate_latest

from evals.export import baseline_of, push, results_registry

pytestmark = pytest.mark.unit


def test_series_for_scores_baseline_leaks_and_time() -> None:
    diff = {"metrics": {"recall_at_5": {"previous": 0.9, "current": 0.8}, "new": {"previous": None}}}
    reg = results_registry(
        "demo", "g0002", {"recall_at_5": 0.8, "label": "x"}, baseline=baseline_of(diff), leaks=0
    )
    text = generate_latest(reg).decode()
    assert 'ragstream_eval_score{generation="g0002",metric="recall_at_5",set="demo"} 0.8' in text
    assert 'ragstream_eval_baseline_score{metric="recall_at_5",set="demo"} 0.9' in text
    assert 'ragstream_eval_leaks{generation="g0002",set="demo"} 0.0' in text
    assert "ragstream_eval_last_run_timestamp_seconds" in text
    assert 'metric="label"' not in text and 'metric="new"' not in text


def test_push_reaches_the_pushgateway_grouped_by_set() -> None:
    seen: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        url = f"127.0.0.1:{server.server_address[1]}"
        assert push(url, "demo", results_registry("demo", None, {"ndcg_at_10": 0.7}, leaks=None))
        assert not push(None, "demo", results_registry("demo", None, {}))
    finally:
        server.server_close()
    method, path, body = seen[0]
    assert method == "PUT" and path == "/metrics/job/ragstream-eval/set/demo"
    assert b'ragstream_eval_score{generation="live",metric="ndcg_at_10",set="demo"} 0.7' in body
