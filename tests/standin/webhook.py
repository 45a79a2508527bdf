"""A webhook receiver that records what it is sent: the demo's and the tests' pager.

POST any path: the JSON body is kept (and appended to --output as one JSON line).
GET /received: everything received so far, oldest first. DELETE /received: forget it.
Switch `fail` (POST /admin {"fail": 2}) answers the next N posts with 500, to exercise
retries.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class WebhookServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], output: Path | None = None) -> None:
        super().__init__(address, _Handler)
        self.output = output
        self.lock = threading.Lock()
        self.received: list[dict[str, Any]] = []
        self.fail_next = 0

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}"

    def record(self, path: str, body: Any) -> None:
        entry = {"path": path, "received_at": time.time(), "body": body}
        with self.lock:
            self.received.append(entry)
            if self.output is not None:
                with self.output.open("a") as out:
                    out.write(json.dumps(entry) + "\n")

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", errors="replace")

    def do_GET(self) -> None:
        if self.path.startswith("/received"):
            self._reply(200, self.server.snapshot())
        else:
            self._reply(404, {"detail": "not found"})

    def do_DELETE(self) -> None:
        with self.server.lock:
            self.server.received.clear()
        self._reply(200, [])

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/admin":
            self.server.fail_next = int(body.get("fail", 0)) if isinstance(body, dict) else 0
            self._reply(200, {"fail": self.server.fail_next})
            return
        with self.server.lock:
            failing = self.server.fail_next > 0
            if failing:
                self.server.fail_next -= 1
        if failing:
            self._reply(500, {"detail": "failing on purpose"})
            return
        self.server.record(self.path, body)
        self._reply(200, {"ok": True})


def serve_in_thread(host: str = "127.0.0.1", port: int = 0, output: Path | None = None) -> WebhookServer:
    server = WebhookServer((host, port), output)
    threading.Thread(target=server.serve_forever, name="webhook", daemon=True).start()
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.standin.webhook", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output", type=Path, help="append each received body here as a JSON line")
    args = parser.parse_args(argv)
    server = serve_in_thread(args.host, args.port, args.output)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"webhook receiver listening on {server.url}", flush=True)
    while not stop.wait(0.2):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
