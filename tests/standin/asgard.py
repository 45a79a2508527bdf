"""A faithful stand-in for the Asgard MLOps API, with switchable faults.

Asgard is not public, so tests and the local demo run this instead. It serves the
contract the monitor's Asgard probe relies on (``/mlops/status``, ``/mlops/models``,
``/mlops/models/{name}``, ``/mlops/inference``) and can, on demand, misbehave the way
a real deployment does: slow answers, error statuses, hangs, dropped connections,
false dependency flags, an empty registry, a different payload shape, HTML instead of
JSON, renamed or missing fields.

Faults are set at start (command line) and changed at run time through an admin API
that faults never touch:

- ``GET /admin/faults``: the current switches as JSON;
- ``PUT`` or ``POST /admin/faults`` with a partial JSON object: change those switches
  (400 naming the key for an unknown switch or a bad value);
- ``DELETE /admin/faults``: back to the start-up values (so does ``SIGUSR1``).

When given an MLflow URL it reads its inventory from that real MLflow server, so the
status it reports follows MLflow going up and down.

Run it as ``python -m tests.standin.asgard --port P``; it prints
``asgard stand-in listening on http://127.0.0.1:P`` once it accepts connections.
Only the standard library and httpx are used, so it starts fast and anywhere.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

__all__ = [
    "STATUS_FIELDS",
    "AsgardServer",
    "FaultError",
    "FaultState",
    "Faults",
    "main",
    "make_server",
    "serve_in_thread",
]

#: Field names of the ``/mlops/status`` payload, in the order they are served.
STATUS_FIELDS: tuple[str, ...] = (
    "mlflow_tracking_uri",
    "mlflow_available",
    "feast_available",
    "registered_models",
    "active_experiments",
    "feature_views",
)

DEFAULT_MODELS: tuple[str, ...] = ("demo-model",)
DEFAULT_TRACKING_URI = "http://localhost:5000"
FEATURE_VIEWS = 3
MLFLOW_TIMEOUT_SECONDS = 2.0
HANG_POLL_SECONDS = 0.05
MODELS_SHAPES: tuple[str, ...] = ("object", "array")
_BOOL_SWITCHES = frozenset({"hang", "drop", "feast_available", "no_models", "non_json"})


class FaultError(ValueError):
    """A fault switch name or value was rejected; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class Faults:
    """The fault switches; the defaults describe a healthy Asgard."""

    latency: float = 0.0
    error_status: int | None = None
    hang: bool = False
    drop: bool = False
    mlflow_available: bool | None = None
    feast_available: bool = True
    no_models: bool = False
    models_shape: str = "object"
    non_json: bool = False
    rename: dict[str, str] = field(default_factory=dict)
    omit: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-ready copy, as served by ``GET /admin/faults``."""
        return dataclasses.asdict(self)

    def validated(self) -> Faults:
        """Return a checked deep copy, so a bad start-up value fails as loudly as a bad PUT."""
        return _apply_changes(Faults(), self.to_json())


def _switch_names() -> tuple[str, ...]:
    """Names of all switches, from the dataclass so there is one list to maintain."""
    return tuple(f.name for f in dataclasses.fields(Faults))


def _check_value(key: str, value: Any) -> Any:
    """Validate and normalise one switch value; raises FaultError naming the key."""
    if key == "latency":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise FaultError(key, f"latency must be a number of seconds >= 0, got {value!r}")
        return float(value)
    if key == "error_status":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
            raise FaultError(key, f"error_status must be an HTTP status 100..599 or null, got {value!r}")
        return value
    if key == "mlflow_available":
        if value is not None and not isinstance(value, bool):
            raise FaultError(key, f"mlflow_available must be true, false or null (auto), got {value!r}")
        return value
    if key in _BOOL_SWITCHES:
        if not isinstance(value, bool):
            raise FaultError(key, f"{key} must be true or false, got {value!r}")
        return value
    if key == "models_shape":
        if value not in MODELS_SHAPES:
            raise FaultError(key, f"models_shape must be one of {list(MODELS_SHAPES)}, got {value!r}")
        return value
    if key == "rename":
        if not isinstance(value, dict):
            raise FaultError(key, f"rename must be an object mapping status field -> new name, got {value!r}")
        for old, new in value.items():
            if old not in STATUS_FIELDS:
                raise FaultError(key, f"rename: {old!r} is not a status field (one of {list(STATUS_FIELDS)})")
            if not isinstance(new, str) or not new:
                raise FaultError(key, f"rename: new name for {old!r} must be a non-empty string, got {new!r}")
        return dict(value)
    if key == "omit":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FaultError(key, f"omit must be a list of status field names, got {value!r}")
        for name in value:
            if name not in STATUS_FIELDS:
                raise FaultError(key, f"omit: {name!r} is not a status field (one of {list(STATUS_FIELDS)})")
        return list(value)
    raise FaultError(key, f"unknown fault switch {key!r}; known switches: {list(_switch_names())}")


def _apply_changes(base: Faults, changes: Mapping[str, Any]) -> Faults:
    """Return a copy of ``base`` with ``changes`` applied; all-or-nothing."""
    if not isinstance(changes, Mapping):
        raise FaultError("", f"fault changes must be a JSON object, got {type(changes).__name__}")
    checked = {str(k): _check_value(str(k), v) for k, v in changes.items()}
    return dataclasses.replace(copy.deepcopy(base), **checked)


class FaultState:
    """The live switches, shared by handler threads, the admin API and signal handlers."""

    def __init__(self, initial: Faults | None = None) -> None:
        self._initial = (initial or Faults()).validated()
        self._current = copy.deepcopy(self._initial)
        self._lock = threading.Lock()

    def snapshot(self) -> Faults:
        """A private copy, so a request sees one consistent set of switches."""
        with self._lock:
            return copy.deepcopy(self._current)

    def update(self, changes: Mapping[str, Any]) -> Faults:
        """Change some switches (validated first, applied atomically); returns the result."""
        with self._lock:
            self._current = _apply_changes(self._current, changes)
            return copy.deepcopy(self._current)

    def reset(self) -> Faults:
        """Back to the start-up switches."""
        with self._lock:
            self._current = copy.deepcopy(self._initial)
            return copy.deepcopy(self._current)

    @property
    def initial(self) -> Faults:
        """The start-up switches (what a reset returns to)."""
        return copy.deepcopy(self._initial)


@dataclass(frozen=True)
class _Inventory:
    """What the stand-in knows about MLflow at the moment of one request."""

    reachable: bool
    models: list[dict[str, Any]]
    registered_models: int
    active_experiments: int


class AsgardServer(ThreadingHTTPServer):
    """The HTTP server; holds the fault state and the MLflow client for its handlers."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        faults: Faults | None = None,
        mlflow_url: str | None = None,
        models: Sequence[str] | None = None,
        verbose: bool = False,
    ) -> None:
        self.faults = FaultState(faults)
        self.mlflow_url = mlflow_url.rstrip("/") if mlflow_url else None
        if models is None:
            models = () if self.mlflow_url else DEFAULT_MODELS
        self.static_models: tuple[str, ...] = tuple(m for m in models if m)
        self.verbose = verbose
        self.stopping = threading.Event()
        self._serving = threading.Event()
        self._stopped = False
        self._stop_lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self._mlflow: httpx.Client | None = httpx.Client(timeout=MLFLOW_TIMEOUT_SECONDS) if self.mlflow_url else None
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """Base URL clients should use."""
        host, port = self.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until ``stop``; records that it runs, since shutdown() would hang otherwise."""
        self._serving.set()
        try:
            super().serve_forever(poll_interval)
        finally:
            self._serving.clear()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and release the socket; releases hung requests too. Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self.stopping.set()
        if self._serving.is_set():
            self.shutdown()
        self.server_close()
        if self._mlflow is not None:
            self._mlflow.close()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    # -- what the API serves -------------------------------------------------------------

    def mlflow_inventory(self) -> _Inventory:
        """Ask the real MLflow (if configured) for its health, models and experiments."""
        if self._mlflow is None or self.mlflow_url is None:
            return _Inventory(True, [], 0, 0)
        base = self.mlflow_url
        try:
            health = self._mlflow.get(f"{base}/health")
            if health.status_code != 200:
                return _Inventory(False, [], 0, 0)
            models: list[dict[str, Any]] = []
            resp = self._mlflow.get(f"{base}/api/2.0/mlflow/registered-models/search", params={"max_results": 1000})
            if resp.status_code == 200:
                for rm in resp.json().get("registered_models", []):  # {} when there are none
                    versions = rm.get("latest_versions") or []
                    models.append(
                        {
                            "name": rm.get("name"),
                            "latest_version": versions[-1].get("version") if versions else None,
                            "description": rm.get("description", ""),
                            "source": "mlflow",
                            "tags": {t["key"]: t.get("value") for t in rm.get("tags", []) if "key" in t},
                        }
                    )
            experiments = 0
            resp = self._mlflow.post(
                f"{base}/api/2.0/mlflow/experiments/search",
                json={"max_results": 1000, "view_type": "ACTIVE_ONLY"},
            )
            if resp.status_code == 200:
                experiments = len(resp.json().get("experiments", []))
            return _Inventory(True, models, len(models), experiments)
        except (httpx.HTTPError, ValueError):
            return _Inventory(False, [], 0, 0)

    def models(self, faults: Faults, inventory: _Inventory | None = None) -> list[dict[str, Any]]:
        """MLflow's registered models plus the configured ones (empty under ``no_models``)."""
        if faults.no_models:
            return []
        inv = inventory if inventory is not None else self.mlflow_inventory()
        out = list(inv.models)
        seen = {m["name"] for m in out}
        for name in self.static_models:
            if name not in seen:
                seen.add(name)
                out.append({"name": name, "latest_version": "1", "description": "", "source": "static", "tags": {}})
        return out

    def status(self, faults: Faults) -> dict[str, Any]:
        """The ``/mlops/status`` payload, after ``omit`` and ``rename``."""
        inv = self.mlflow_inventory()
        models = self.models(faults, inv)
        if self.mlflow_url:
            registered, experiments = inv.registered_models, inv.active_experiments
        else:
            registered = experiments = len(models)
        mlflow_ok = inv.reachable if faults.mlflow_available is None else faults.mlflow_available
        payload: dict[str, Any] = {
            "mlflow_tracking_uri": self.mlflow_url or DEFAULT_TRACKING_URI,
            "mlflow_available": mlflow_ok,
            "feast_available": faults.feast_available,
            "registered_models": 0 if faults.no_models else registered,
            "active_experiments": 0 if faults.no_models else experiments,
            "feature_views": 0 if faults.no_models else FEATURE_VIEWS,
        }
        for name in faults.omit:
            payload.pop(name, None)
        return {faults.rename.get(k, k): v for k, v in payload.items()}


def _predict(model: str, item: Any) -> float:
    """Deterministic fake prediction: the same model and input always give the same number."""
    digest = hashlib.sha256(json.dumps([model, item], sort_keys=True).encode()).digest()
    return round(int.from_bytes(digest[:4], "big") / 2**32, 6)


class _HttpError(Exception):
    """Ends a request early with a JSON ``{"detail": ...}`` answer."""

    def __init__(self, status: int, detail: str, allow: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.allow = allow


class _Handler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive, so every request body is read fully."""

    protocol_version = "HTTP/1.1"
    server_version = "AsgardStandin/1.0"
    disable_nagle_algorithm = True  # headers and body are two writes: avoid the ~40 ms delayed-ACK stall
    timeout = 60  # idle keep-alive connections are closed after this
    server: AsgardServer

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        """Quiet unless --verbose: test output stays readable."""
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:  # stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # -- plumbing --------------------------------------------------------------------

    def _read_body(self) -> bytes:
        """Read the whole request body (Content-Length or chunked) to keep the connection in sync."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        """Write one complete response with a correct Content-Length."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client went away (e.g. it timed out on a hang)
            self.close_connection = True

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _dispatch(self, method: str) -> None:
        """Route a request: admin first (never faulted), then /mlops/* under the faults."""
        path = urlsplit(self.path).path
        try:
            body = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        try:
            if path == "/admin/faults":
                self._admin(method, body)
            elif path == "/mlops" or path.startswith("/mlops/"):
                self._mlops(method, path, body)
            else:
                raise _HttpError(404, "not found")
        except _HttpError as err:
            extra = {"Allow": err.allow} if err.allow else None
            self._json(err.status, {"detail": err.detail}, extra)

    def _admin(self, method: str, body: bytes) -> None:
        """GET/PUT/POST/DELETE /admin/faults."""
        state = self.server.faults
        if method == "GET":
            self._json(200, state.snapshot().to_json())
        elif method in ("PUT", "POST", "PATCH"):
            try:
                changes = json.loads(body or b"{}")
            except ValueError as exc:
                raise _HttpError(400, f"body is not JSON: {exc}") from None
            try:
                self._json(200, state.update(changes).to_json())
            except FaultError as exc:
                raise _HttpError(400, str(exc)) from None
        elif method == "DELETE":
            self._json(200, state.reset().to_json())
        else:
            raise _HttpError(405, "method not allowed", allow="GET, PUT, POST, DELETE")

    def _apply_faults(self, faults: Faults) -> bool:
        """Hang, drop, delay or fail as switched; True when the request was handled here."""
        server = self.server
        if faults.hang:
            while not server.stopping.is_set() and server.faults.snapshot().hang:
                time.sleep(HANG_POLL_SECONDS)
            if server.stopping.is_set():
                self.close_connection = True
                return True
            faults = server.faults.snapshot()  # the switch was cleared: carry on as now set
        if faults.drop:
            self.close_connection = True  # the socket is closed with nothing written
            return True
        if faults.latency > 0 and server.stopping.wait(faults.latency):
            self.close_connection = True
            return True
        if faults.error_status is not None:
            self._json(faults.error_status, {"detail": f"injected fault: HTTP {faults.error_status}"})
            return True
        if faults.non_json:
            page = b"<!doctype html><html><head><title>Asgard</title></head><body><h1>Asgard</h1><p>Maintenance</p></body></html>"
            self._send(200, page, "text/html; charset=utf-8")
            return True
        return False

    def _mlops(self, method: str, path: str, body: bytes) -> None:
        """The Asgard API proper."""
        faults = self.server.faults.snapshot()
        if self._apply_faults(faults):
            return
        faults = self.server.faults.snapshot()
        server = self.server
        if path == "/mlops/status":
            if method != "GET":
                raise _HttpError(405, "method not allowed", allow="GET")
            self._json(200, server.status(faults))
        elif path == "/mlops/models":
            if method != "GET":
                raise _HttpError(405, "method not allowed", allow="GET")
            models = server.models(faults)
            self._json(200, models if faults.models_shape == "array" else {"models": models})
        elif path.startswith("/mlops/models/"):
            if method != "GET":
                raise _HttpError(405, "method not allowed", allow="GET")
            name = unquote(path[len("/mlops/models/") :])
            for model in server.models(faults):
                if model["name"] == name:
                    self._json(200, model)
                    return
            raise _HttpError(404, "model not found")
        elif path == "/mlops/inference":
            if method != "POST":
                raise _HttpError(405, "method not allowed", allow="POST")
            self._inference(faults, body)
        else:
            raise _HttpError(404, "not found")

    def _inference(self, faults: Faults, body: bytes) -> None:
        """POST /mlops/inference: {"model", "inputs": [...]} -> deterministic predictions."""
        try:
            request = json.loads(body)
        except ValueError as exc:
            raise _HttpError(400, f"body is not JSON: {exc}") from None
        if not isinstance(request, dict) or not isinstance(request.get("model"), str):
            raise _HttpError(422, "body must be an object with a string 'model'")
        inputs = request.get("inputs")
        if not isinstance(inputs, list):
            raise _HttpError(422, "'inputs' must be a list")
        name = request["model"]
        model = next((m for m in self.server.models(faults) if m["name"] == name), None)
        if model is None:
            raise _HttpError(404, "model not found")
        self._json(
            200,
            {
                "model": name,
                "model_version": model.get("latest_version"),
                "predictions": [_predict(name, item) for item in inputs],
            },
        )


def make_server(
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Faults | None = None,
    mlflow_url: str | None = None,
    models: Sequence[str] | None = None,
    verbose: bool = False,
) -> AsgardServer:
    """Bind (port 0 picks a free one) without serving yet; call serve_forever or use serve_in_thread."""
    return AsgardServer((host, port), faults=faults, mlflow_url=mlflow_url, models=models, verbose=verbose)


def serve_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Faults | None = None,
    mlflow_url: str | None = None,
    models: Sequence[str] | None = None,
) -> tuple[AsgardServer, str]:
    """Start the stand-in in a daemon thread for in-process tests; stop with ``server.stop()``."""
    server = make_server(host, port, faults, mlflow_url, models)
    server.thread = threading.Thread(target=server.serve_forever, name="asgard-standin", daemon=True)
    server.thread.start()
    server._serving.wait(5)
    return server, server.url


# -- command line ----------------------------------------------------------------------


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_tristate(text: str) -> bool | None:
    if text.strip().lower() in ("auto", "null", "none"):
        return None
    return _parse_bool(text)


def _parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_rename(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in _parse_list(text):
        old, sep, new = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected old=new pairs, got {part!r}")
        pairs[old.strip()] = new.strip()
    return pairs


def build_parser() -> argparse.ArgumentParser:
    """The command line; every fault switch has a start-up flag."""
    p = argparse.ArgumentParser(prog="python -m tests.standin.asgard", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, required=True, help="port (0 picks a free one)")
    p.add_argument("--mlflow-url", default=None, help="real MLflow server to report on")
    p.add_argument("--models", type=_parse_list, default=None, help="comma-separated extra model names")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added before /mlops/* answers")
    p.add_argument("--error-status", type=int, default=None, help="answer /mlops/* with this status")
    p.add_argument("--hang", action="store_true", help="never answer /mlops/* until cleared")
    p.add_argument("--drop", action="store_true", help="close /mlops/* connections without answering")
    p.add_argument("--mlflow-available", type=_parse_tristate, default=None, help="true|false|auto")
    p.add_argument("--feast-available", type=_parse_bool, default=True, help="true|false")
    p.add_argument("--no-models", action="store_true", help="empty model list, counts 0")
    p.add_argument("--models-shape", choices=MODELS_SHAPES, default="object", help="/mlops/models payload")
    p.add_argument("--non-json", action="store_true", help="answer /mlops/* with an HTML page")
    p.add_argument("--rename", type=_parse_rename, default={}, help="status field renames: old=new,...")
    p.add_argument("--omit", type=_parse_list, default=[], help="status fields to leave out: a,b")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return p


def faults_from_args(args: argparse.Namespace) -> Faults:
    """Start-up switches from parsed arguments."""
    return Faults(
        latency=args.latency,
        error_status=args.error_status,
        hang=args.hang,
        drop=args.drop,
        mlflow_available=args.mlflow_available,
        feast_available=args.feast_available,
        no_models=args.no_models,
        models_shape=args.models_shape,
        non_json=args.non_json,
        rename=args.rename,
        omit=args.omit,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; SIGUSR1 resets the faults to their start-up values."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        faults = faults_from_args(args).validated()
    except FaultError as exc:
        parser.error(str(exc))
    try:
        server = make_server(args.host, args.port, faults, args.mlflow_url, args.models, args.verbose)
    except OSError as exc:
        print(f"asgard stand-in: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: server.faults.reset())
    server.thread = threading.Thread(target=server.serve_forever, name="asgard-standin", daemon=True)
    server.thread.start()
    server._serving.wait(5)
    print(f"asgard stand-in listening on {server.url}", flush=True)
    try:
        while not stop.is_set():
            stop.wait(0.2)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
