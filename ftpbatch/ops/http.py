"""``/metrics``, ``/healthz`` and ``/status`` over HTTP (a threaded http.server)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .. import __version__
from ..errors import ConfigError
from ..lifecycle import all_alive

log = logging.getLogger(__name__)


class OpsServer:
    """``/metrics``, ``/healthz`` and ``/status`` on a threaded http.server (a service: ``ops-http``)."""

    name = "ops-http"

    def __init__(
        self,
        host: str,
        port: int,
        render: Callable[[], bytes],
        ready: Callable[[], bool],
        status: Callable[[], dict[str, Any]],
        health: Callable[[], dict[str, bool]] = dict,
    ) -> None:
        handler = type(
            "OpsHandler",
            (_OpsHandler,),
            {name: staticmethod(f) for name, f in (("render", render), ("ready", ready), ("status", status), ("health", health))},
        )
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; choose another --metrics-port") from None
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="ops-http", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        return all_alive([self._thread])

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(5.0)
        self.httpd.server_close()


class _OpsHandler(BaseHTTPRequestHandler):
    render: Callable[[], bytes]
    ready: Callable[[], bool]
    status: Callable[[], dict[str, Any]]
    health: Callable[[], dict[str, bool]]
    server_version = f"ftpbatch/{__version__}"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._send(200, self.render(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ready = self.ready()
                body = {"ready": ready, "components": self.health()}
                self._send(200 if ready else 503, json.dumps(body).encode() + b"\n", "application/json")
            elif path == "/status":
                self._send(200, json.dumps(self.status(), indent=2).encode() + b"\n", "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /status\n", "text/plain; charset=utf-8")
        except Exception:
            log.exception("ops endpoint %s failed", path)
            self._send(500, b"internal error\n", "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        log.debug("ops %s - %s", self.address_string(), format % args)
