"""Tests of the Asgard stand-in, run as its own process exactly as the monitor's tests and the demo use it.

Every endpoint and every fault switch is exercised over real HTTP with httpx; the
MLflow-backed mode runs against a real ``mlflow server``. Each process started here
binds 127.0.0.1 and is stopped by its own PID (MLflow by its own process group).
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import wait_for
from tests.servers import MlflowServer
from tests.standin.asgard import STATUS_FIELDS, Faults, serve_in_thread

REPO = Path(__file__).resolve().parents[1]
READY_PREFIX = "asgard stand-in listening on "

pytestmark = pytest.mark.timeout(120)


class Standin:
    """A stand-in subprocess and the URL it announced."""

    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def stop(self) -> int:
        """SIGTERM by PID, SIGKILL by PID if it does not exit; returns the exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        return int(self.proc.returncode)


def start_standin(*args: str, port: int = 0) -> Standin:
    """Start ``python -m tests.standin.asgard`` (port 0: it binds a free one) and wait for
    the ready line that names its URL."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.standin.asgard", "--port", str(port), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(READY_PREFIX):
                url = line[len(READY_PREFIX) :].strip()
                assert url.startswith("http://127.0.0.1:") and (port == 0 or url == f"http://127.0.0.1:{port}")
                return Standin(proc, url)
            if not line and proc.poll() is not None:
                break
    Standin(proc, "").stop()
    pytest.fail(f"stand-in did not announce readiness (exit code {proc.poll()})")


@pytest.fixture(scope="module")
def standin_proc() -> Iterator[Standin]:
    s = start_standin()
    yield s
    assert s.stop() == 0


@pytest.fixture()
def standin(standin_proc: Standin) -> Iterator[Standin]:
    """The shared stand-in with its faults reset before and after each test."""
    httpx.delete(f"{standin_proc.url}/admin/faults", timeout=5).raise_for_status()
    yield standin_proc
    httpx.delete(f"{standin_proc.url}/admin/faults", timeout=5).raise_for_status()


@pytest.fixture()
def client(standin: Standin) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=standin.url, timeout=5) as c:
        yield c


def set_faults(client: httpx.Client, **changes: Any) -> dict[str, Any]:
    resp = client.put("/admin/faults", json=changes)
    assert resp.status_code == 200, resp.text
    return resp.json()


DEFAULT_FAULTS = {
    "latency": 0.0,
    "error_status": None,
    "hang": False,
    "drop": False,
    "mlflow_available": None,
    "feast_available": True,
    "no_models": False,
    "models_shape": "object",
    "non_json": False,
    "rename": {},
    "omit": [],
}


# -- the API contract ---------------------------------------------------------------------


def test_status_defaults(client: httpx.Client) -> None:
    resp = client.get("/mlops/status")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {
        "mlflow_tracking_uri": "http://localhost:5000",
        "mlflow_available": True,
        "feast_available": True,
        "registered_models": 1,
        "active_experiments": 1,
        "feature_views": 3,
    }
    assert list(resp.json()) == list(STATUS_FIELDS)


def test_models_list_get_and_404(client: httpx.Client) -> None:
    resp = client.get("/mlops/models")
    assert resp.status_code == 200
    body = resp.json()
    assert isinstance(body, dict)
    assert [m["name"] for m in body["models"]] == ["demo-model"]
    assert body["models"][0]["latest_version"] == "1"

    one = client.get("/mlops/models/demo-model")
    assert one.status_code == 200
    assert one.json() == body["models"][0]

    missing = client.get("/mlops/models/nope")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "model not found"}


def test_inference_is_deterministic(client: httpx.Client) -> None:
    payload = {"model": "demo-model", "inputs": [[1.0, 2.0], [3.0, 4.0], "x"]}
    first = client.post("/mlops/inference", json=payload)
    second = client.post("/mlops/inference", json=payload)
    assert first.status_code == 200
    body = first.json()
    assert body["model"] == "demo-model"
    assert len(body["predictions"]) == 3
    assert all(isinstance(p, float) and 0 <= p < 1 for p in body["predictions"])
    assert len(set(body["predictions"])) == 3
    assert second.json() == body

    assert client.post("/mlops/inference", json={"model": "nope", "inputs": [1]}).status_code == 404
    bad = client.post("/mlops/inference", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "detail" in bad.json()
    assert client.post("/mlops/inference", json={"model": "demo-model", "inputs": 3}).status_code == 422
    wrong = client.get("/mlops/inference")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


def test_unknown_paths_are_json_404(client: httpx.Client) -> None:
    for path in ("/", "/nope", "/mlops/nope", "/admin/other"):
        resp = client.get(path)
        assert resp.status_code == 404, path
        assert resp.json() == {"detail": "not found"}


def test_keep_alive_and_content_length(standin: Standin) -> None:
    host, port = standin.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/mlops/status")
        first = conn.getresponse()
        body1 = first.read()
        sock = conn.sock
        assert first.status == 200
        assert int(first.headers["Content-Length"]) == len(body1)
        assert first.headers.get("Connection", "").lower() != "close"
        conn.request(
            "POST",
            "/mlops/inference",
            body=json.dumps({"model": "demo-model", "inputs": [1]}),
            headers={"Content-Type": "application/json"},
        )
        second = conn.getresponse()
        body2 = second.read()
        assert second.status == 200
        assert int(second.headers["Content-Length"]) == len(body2)
        assert conn.sock is sock, "the connection was not kept alive"
        conn.request("GET", "/nope")
        third = conn.getresponse()
        assert third.status == 404 and json.loads(third.read()) == {"detail": "not found"}
        assert conn.sock is sock
    finally:
        conn.close()


# -- the admin API ------------------------------------------------------------------------


def test_admin_get_update_reset(client: httpx.Client) -> None:
    assert client.get("/admin/faults").json() == DEFAULT_FAULTS

    after = set_faults(client, latency=0.1, feast_available=False)
    assert after == {**DEFAULT_FAULTS, "latency": 0.1, "feast_available": False}
    after = client.post("/admin/faults", json={"error_status": 500}).json()
    assert after["error_status"] == 500 and after["latency"] == 0.1  # partial: others kept
    assert client.get("/admin/faults").json() == after

    assert client.delete("/admin/faults").json() == DEFAULT_FAULTS
    assert client.get("/admin/faults").json() == DEFAULT_FAULTS


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"latncy": 1}, "latncy"),
        ({"latency": -1}, "latency"),
        ({"latency": "slow"}, "latency"),
        ({"error_status": 42}, "error_status"),
        ({"hang": "yes"}, "hang"),
        ({"mlflow_available": "auto"}, "mlflow_available"),
        ({"models_shape": "list"}, "models_shape"),
        ({"rename": {"no_such_field": "x"}}, "no_such_field"),
        ({"omit": ["feature_view"]}, "feature_view"),
        ({"drop": True, "bogus": 1}, "bogus"),
    ],
)
def test_admin_rejects_bad_switches(client: httpx.Client, body: dict[str, Any], named: str) -> None:
    resp = client.put("/admin/faults", json=body)
    assert resp.status_code == 400
    assert named in resp.json()["detail"]
    assert client.get("/admin/faults").json() == DEFAULT_FAULTS  # nothing applied


def test_admin_rejects_non_object(client: httpx.Client) -> None:
    assert client.put("/admin/faults", json=[1, 2]).status_code == 400
    assert client.put("/admin/faults", content=b"nope").status_code == 400
    assert client.get("/admin/faults").json() == DEFAULT_FAULTS


# -- the switches -------------------------------------------------------------------------


def test_latency_is_added_but_not_to_admin(client: httpx.Client) -> None:
    t0 = time.monotonic()
    assert client.get("/mlops/status").status_code == 200
    baseline = time.monotonic() - t0
    assert baseline < 0.3

    set_faults(client, latency=0.4)
    for path in ("/mlops/status", "/mlops/models"):
        t0 = time.monotonic()
        assert client.get(path).status_code == 200
        assert time.monotonic() - t0 >= 0.4
    t0 = time.monotonic()
    assert client.get("/admin/faults").json()["latency"] == 0.4
    assert time.monotonic() - t0 < 0.3


def test_error_status(client: httpx.Client) -> None:
    set_faults(client, error_status=503)
    for resp in (
        client.get("/mlops/status"),
        client.get("/mlops/models"),
        client.get("/mlops/models/demo-model"),
        client.post("/mlops/inference", json={"model": "demo-model", "inputs": [1]}),
    ):
        assert resp.status_code == 503
        assert "503" in resp.json()["detail"]
    assert client.get("/admin/faults").status_code == 200
    set_faults(client, error_status=None)
    assert client.get("/mlops/status").status_code == 200


def test_hang_until_cleared(client: httpx.Client, standin: Standin) -> None:
    set_faults(client, hang=True)
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{standin.url}/mlops/status", timeout=0.5)
    assert 0.4 <= time.monotonic() - t0 < 2

    # a request that is hanging is answered once the switch is cleared
    result: dict[str, Any] = {}

    def slow_request() -> None:
        result["resp"] = httpx.get(f"{standin.url}/mlops/models", timeout=10)

    waiter = threading.Thread(target=slow_request)
    waiter.start()
    time.sleep(0.4)
    assert waiter.is_alive()
    assert client.get("/admin/faults").json()["hang"] is True  # admin unaffected
    set_faults(client, hang=False)
    waiter.join(5)
    assert not waiter.is_alive()
    assert result["resp"].status_code == 200

    assert httpx.get(f"{standin.url}/mlops/status", timeout=0.5).status_code == 200


def test_drop_closes_without_response(client: httpx.Client, standin: Standin) -> None:
    set_faults(client, drop=True)
    with httpx.Client(timeout=5) as fresh:
        with pytest.raises(httpx.RemoteProtocolError):
            fresh.get(f"{standin.url}/mlops/status")
        with pytest.raises(httpx.RemoteProtocolError):
            fresh.post(f"{standin.url}/mlops/inference", json={"model": "demo-model", "inputs": [1]})
    assert client.get("/admin/faults").json()["drop"] is True
    set_faults(client, drop=False)
    assert client.get("/mlops/status").status_code == 200


def test_dependency_flags(client: httpx.Client) -> None:
    set_faults(client, mlflow_available=False, feast_available=False)
    status = client.get("/mlops/status").json()
    assert status["mlflow_available"] is False
    assert status["feast_available"] is False
    set_faults(client, mlflow_available=None)
    assert client.get("/mlops/status").json()["mlflow_available"] is True  # auto: no MLflow to ask
    set_faults(client, mlflow_available=True, feast_available=True)
    status = client.get("/mlops/status").json()
    assert status["mlflow_available"] is True and status["feast_available"] is True


def test_no_models(client: httpx.Client) -> None:
    set_faults(client, no_models=True)
    assert client.get("/mlops/models").json() == {"models": []}
    status = client.get("/mlops/status").json()
    assert (status["registered_models"], status["active_experiments"], status["feature_views"]) == (0, 0, 0)
    assert client.get("/mlops/models/demo-model").status_code == 404
    assert client.post("/mlops/inference", json={"model": "demo-model", "inputs": [1]}).status_code == 404
    set_faults(client, models_shape="array")
    assert client.get("/mlops/models").json() == []


def test_models_shape(client: httpx.Client) -> None:
    set_faults(client, models_shape="array")
    body = client.get("/mlops/models").json()
    assert isinstance(body, list) and [m["name"] for m in body] == ["demo-model"]
    set_faults(client, models_shape="object")
    body = client.get("/mlops/models").json()
    assert isinstance(body, dict) and [m["name"] for m in body["models"]] == ["demo-model"]


def test_non_json(client: httpx.Client) -> None:
    set_faults(client, non_json=True)
    resp = client.get("/mlops/status")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    assert int(resp.headers["content-length"]) == len(resp.content)
    with pytest.raises(json.JSONDecodeError):
        resp.json()
    assert client.get("/admin/faults").json()["non_json"] is True


def test_rename_and_omit(client: httpx.Client) -> None:
    set_faults(
        client, rename={"registered_models": "registeredModels", "mlflow_available": "mlflowUp"}, omit=["feature_views"]
    )
    status = client.get("/mlops/status").json()
    assert status == {
        "mlflow_tracking_uri": "http://localhost:5000",
        "mlflowUp": True,
        "feast_available": True,
        "registeredModels": 1,
        "active_experiments": 1,
    }
    set_faults(client, rename={}, omit=[])
    assert list(client.get("/mlops/status").json()) == list(STATUS_FIELDS)


def test_sigusr1_resets_faults(client: httpx.Client, standin: Standin) -> None:
    set_faults(client, latency=0.2, error_status=502, no_models=True, omit=["feast_available"])
    assert client.get("/mlops/status").status_code == 502
    os.kill(standin.proc.pid, signal.SIGUSR1)
    assert wait_for(lambda: client.get("/admin/faults").json() == DEFAULT_FAULTS)
    assert client.get("/mlops/status").status_code == 200


# -- start-up flags and process lifecycle -------------------------------------------------


@pytest.mark.integration
def test_startup_flags_are_the_reset_values() -> None:
    s = start_standin(
        "--host",
        "127.0.0.1",
        "--models",
        "a,b",
        "--latency",
        "0.2",
        "--error-status",
        "502",
        "--mlflow-available",
        "false",
        "--feast-available",
        "false",
        "--models-shape",
        "array",
        "--rename",
        "feature_views=views",
        "--omit",
        "active_experiments",
    )
    try:
        with httpx.Client(base_url=s.url, timeout=5) as c:
            expected = {
                **DEFAULT_FAULTS,
                "latency": 0.2,
                "error_status": 502,
                "mlflow_available": False,
                "feast_available": False,
                "models_shape": "array",
                "rename": {"feature_views": "views"},
                "omit": ["active_experiments"],
            }
            assert c.get("/admin/faults").json() == expected
            t0 = time.monotonic()
            assert c.get("/mlops/status").status_code == 502
            assert time.monotonic() - t0 >= 0.2
            set_faults(c, error_status=None, latency=0)
            assert c.get("/mlops/status").json() == {
                "mlflow_tracking_uri": "http://localhost:5000",
                "mlflow_available": False,
                "feast_available": False,
                "registered_models": 2,
                "views": 3,
            }
            assert [m["name"] for m in c.get("/mlops/models").json()] == ["a", "b"]
            assert c.get("/mlops/models/demo-model").status_code == 404
            assert c.delete("/admin/faults").json() == expected  # reset returns to start-up values
    finally:
        assert s.stop() == 0


@pytest.mark.integration
def test_startup_hang_drop_non_json_no_models_and_sigterm_while_hung() -> None:
    s = start_standin("--hang", "--drop", "--non-json", "--no-models")
    with httpx.Client(base_url=s.url, timeout=5) as c:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{s.url}/mlops/status", timeout=0.5)
        set_faults(c, hang=False)
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{s.url}/mlops/status", timeout=2)
        set_faults(c, drop=False)
        assert c.get("/mlops/status").headers["content-type"].startswith("text/html")
        set_faults(c, non_json=False)
        assert c.get("/mlops/models").json() == {"models": []}
        set_faults(c, hang=True)

    errors: list[BaseException] = []

    def hung_request() -> None:
        try:
            httpx.get(f"{s.url}/mlops/status", timeout=10)
        except httpx.HTTPError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=hung_request)
    waiter.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    os.kill(s.proc.pid, signal.SIGTERM)
    assert s.proc.wait(5) == 0
    assert time.monotonic() - t0 < 3, "a hung request delayed shutdown"
    waiter.join(5)
    assert errors, "the hung request should end without an answer when the server stops"
    s.stop()


@pytest.mark.integration
def test_sigint_exits_cleanly() -> None:
    s = start_standin()
    os.kill(s.proc.pid, signal.SIGINT)
    assert s.proc.wait(5) == 0
    s.stop()


@pytest.mark.integration
def test_bad_arguments_exit_2() -> None:
    for bad in (["--models-shape", "list"], ["--feast-available", "maybe"], ["--error-status", "42"]):
        proc = subprocess.run(
            [sys.executable, "-m", "tests.standin.asgard", "--port", "0", *bad],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert proc.returncode == 2, (bad, proc.stderr)


@pytest.mark.slow
def test_in_process_server() -> None:
    server, url = serve_in_thread(faults=Faults(feast_available=False), models=["x"])
    try:
        assert url == server.url and url.startswith("http://127.0.0.1:")
        status = httpx.get(f"{url}/mlops/status", timeout=5).json()
        assert status["feast_available"] is False and status["registered_models"] == 1
        server.faults.update({"error_status": 504})
        assert httpx.get(f"{url}/mlops/models/x", timeout=5).status_code == 504
        assert server.faults.reset().error_status is None
        assert httpx.get(f"{url}/mlops/models/x", timeout=5).json()["name"] == "x"
        server.faults.update({"hang": True})
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{url}/mlops/status", timeout=0.3)
        errors: list[BaseException] = []

        def hung_request() -> None:
            try:
                httpx.get(f"{url}/mlops/status", timeout=10)
            except httpx.HTTPError as exc:
                errors.append(exc)

        waiter = threading.Thread(target=hung_request)
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive()
    finally:
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 3
    # stopping releases the hung handler: the client sees the connection closed, unanswered
    waiter.join(3)
    assert not waiter.is_alive(), "a hung handler outlived stop()"
    assert isinstance(errors[0], httpx.RemoteProtocolError)
    assert server.thread is not None and not server.thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/mlops/status", timeout=1)
    server.stop()  # idempotent


# -- backed by a real MLflow --------------------------------------------------------------


def test_backed_by_real_mlflow(own_mlflow: MlflowServer) -> None:
    mlflow_url = own_mlflow.url
    standin: Standin | None = None

    try:
        standin = start_standin("--mlflow-url", mlflow_url, "--models", "static-one")
        with httpx.Client(base_url=standin.url, timeout=10) as c, httpx.Client(base_url=mlflow_url, timeout=10) as ml:
            status = c.get("/mlops/status").json()
            assert status == {
                "mlflow_tracking_uri": mlflow_url,
                "mlflow_available": True,
                "feast_available": True,
                "registered_models": 0,  # MLflow answers {} when there are none
                "active_experiments": 1,  # "Default"
                "feature_views": 3,
            }
            assert [m["name"] for m in c.get("/mlops/models").json()["models"]] == ["static-one"]

            ml.post("/api/2.0/mlflow/registered-models/create", json={"name": "m1"}).raise_for_status()
            ml.post("/api/2.0/mlflow/experiments/create", json={"name": "e1"}).raise_for_status()
            status = c.get("/mlops/status").json()
            assert status["registered_models"] == 1
            assert status["active_experiments"] == 2
            models = c.get("/mlops/models").json()["models"]
            assert [(m["name"], m["latest_version"]) for m in models] == [("m1", None), ("static-one", "1")]

            ml.post(
                "/api/2.0/mlflow/model-versions/create", json={"name": "m1", "source": "s3://bucket/m1"}
            ).raise_for_status()
            m1 = c.get("/mlops/models/m1")
            assert m1.status_code == 200
            assert m1.json()["latest_version"] == "1" and m1.json()["source"] == "mlflow"
            pred = c.post("/mlops/inference", json={"model": "m1", "inputs": [1, 2]}).json()
            assert pred["model"] == "m1" and pred["model_version"] == "1" and len(pred["predictions"]) == 2

            set_faults(c, mlflow_available=False)
            assert c.get("/mlops/status").json()["mlflow_available"] is False
            c.delete("/admin/faults")

            own_mlflow.stop()
            t0 = time.monotonic()
            status = c.get("/mlops/status").json()
            assert time.monotonic() - t0 < 3
            assert status["mlflow_available"] is False
            assert (status["registered_models"], status["active_experiments"]) == (0, 0)
            assert [m["name"] for m in c.get("/mlops/models").json()["models"]] == ["static-one"]
            assert c.get("/mlops/models/m1").status_code == 404
            set_faults(c, mlflow_available=True)  # the override wins over what is observed
            assert c.get("/mlops/status").json()["mlflow_available"] is True
    finally:
        if standin is not None:
            assert standin.stop() == 0
