"""A worker's HTTP endpoints on its metrics port: /metrics (Prometheus), /livez and /readyz.

/livez fails while the consumer is stuck (lag and no progress for `worker.stuck_after_s`): the kubelet
restarts a process that can no longer make progress (a wedged client, a dead event loop). /readyz is
ready once the worker started and is not stopping. Served from a daemon thread, so a blocked event loop
cannot hide itself behind a healthy endpoint: the thread reads the worker's last progress time.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class Probed(Protocol):
    @property
    def stuck(self) -> bool: ...

    @property
    def ready(self) -> bool: ...


def _handler(target: Probed) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/livez":
                stuck = target.stuck
                self._send(503 if stuck else 200, b"stuck\n" if stuck else b"ok\n")
            elif path == "/readyz":
                ready = target.ready
                self._send(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: no log
            return

    return Handler


def serve_health(port: int, host: str, target: Probed) -> ThreadingHTTPServer:
    """Start serving on (host, port) in a daemon thread; returns the server (`shutdown()` stops it)."""
    server = ThreadingHTTPServer((host, port), _handler(target))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
