"""A local HTTP endpoint for the HTTP-invoked function tests: every request is recorded, the
path picks the answer; and the iii-http-functions config that lets the engine call it."""
from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOCAL_SECURITY = """\
- name: iii-http-functions
  config:
    security:
      url_allowlist: ["127.0.0.1", "localhost"]
      block_private_ips: false
      require_https: false
"""


class Receiver:
    """A local HTTP endpoint: every request is recorded; the path picks the answer."""

    def __init__(self) -> None:
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.put({"method": self.command, "path": self.path, "body": body,
                                       "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "raw_names": [k for k in self.headers.keys()]})
                status, ctype, out = receiver.answer(self.path, body)
                if self.path.startswith("/slow"):
                    time.sleep(1.5)
                self.send_response(status)
                if status in (301, 302):
                    self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                if ctype:
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(out)))
                try:
                    self.end_headers()
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):  # the engine timed out first
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @staticmethod
    def answer(path: str, body: bytes) -> tuple[int, str, bytes]:
        if path.startswith("/fail400"):
            return 400, "text/plain", b"bad request"
        if path.startswith("/fail502"):
            return 502, "application/json", b'{"error":{"code":"upstream_failure","message":"gateway failed"}}'
        if path.startswith("/empty"):
            return 204, "", b""
        if path.startswith("/redirect"):
            return 302, "text/html", b"<html>moved</html>"
        if path.startswith("/text"):
            return 200, "text/plain", b"not-json"
        return 200, "application/json", json.dumps({"echo": json.loads(body or b"null")}).encode()

    def next(self, timeout: float = 10.0) -> dict[str, Any]:
        return self.requests.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
