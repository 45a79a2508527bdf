"""The model-serving example (deploy/examples/checks-model-serving.yaml) against a real
`mlflow models serve`: a tiny pyfunc model saved in the test, served with
`--env-manager local` on loopback, checked with `synthetic-monitor check`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[1]
SAVE_MODEL = """
import sys
import mlflow.pyfunc

class Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [float(x) * 2 for x in model_input["x"]]

mlflow.pyfunc.save_model(sys.argv[1], python_model=Doubler())
"""


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("serving")
    model = root / "model"
    saved = subprocess.run(
        [sys.executable, "-c", SAVE_MODEL, str(model)], capture_output=True, text=True, timeout=180, cwd=root
    )
    assert saved.returncode == 0, saved.stderr[-3000:]
    port = free_port()
    # `mlflow models serve` runs uvicorn from PATH: the venv's bin directory first.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(root / "serve.log", "w")
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model), "--env-manager", "local"]
    proc = subprocess.Popen(
        [*command, "-p", str(port), "-h", "127.0.0.1"],
        env=env,
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its uvicorn child goes with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a loaded 2-core machine took 43 s
        while True:
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (root / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.mark.integration
def test_the_model_serving_example_passes_against_mlflow_models_serve(serving: str, tmp_path: Path) -> None:
    document = yaml.safe_load((REPO / "deploy/examples/checks-model-serving.yaml").read_text())
    document["targets"][0]["url"] = serving
    config = tmp_path / "serving.yaml"
    config.write_text(yaml.safe_dump(document))
    check = subprocess.run(
        [sys.executable, "-m", "monitor", "check", "--config", str(config), "--format", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    (probe,) = json.loads(check.stdout)["probes"]
    assert [(s["name"], s["ok"]) for s in probe["steps"]] == [("ping", True), ("invocations", True)]


@pytest.mark.integration
def test_a_wrong_prediction_shape_is_the_named_assertion(serving: str, tmp_path: Path) -> None:
    document = yaml.safe_load((REPO / "deploy/examples/checks-model-serving.yaml").read_text())
    document["targets"][0]["url"] = serving
    # Three rows in: three predictions out, so the example's shape assertion must fail by name.
    document["probes"][0]["options"]["steps"][1]["request"]["json"]["dataframe_split"]["data"].append([3.0])
    config = tmp_path / "serving.yaml"
    config.write_text(yaml.safe_dump(document))
    check = subprocess.run(
        [sys.executable, "-m", "monitor", "check", "--config", str(config), "--format", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 1, check.stdout + check.stderr
    (probe,) = json.loads(check.stdout)["probes"]
    failed = probe["steps"][1]
    assert failed["name"] == "invocations" and failed["reason"] == "assertion_failed"
    assert "two_predictions" in failed["error"]
