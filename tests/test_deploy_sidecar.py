"""The sidecar is a kustomize Component that patches a Deployment the user names (by the
label synthetic-monitor.io/sidecar: "true") and carries no MLflow of its own (issue 23):
applying it can never replace the user's server with a reference one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
COMPONENT = DEPLOY / "kubernetes" / "sidecar"
MONITOR = "synthetic-monitor"

USER_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tracking
  labels: {app: tracking, synthetic-monitor.io/sidecar: "true"}
spec:
  selector: {matchLabels: {app: tracking}}
  template:
    metadata: {labels: {app: tracking}}
    spec:
      containers:
        - name: tracking-server
          image: ghcr.io/mlflow/mlflow:v3.17.2
          readinessProbe: {httpGet: {path: /health, port: 5000}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: unrelated}
spec:
  selector: {matchLabels: {app: unrelated}}
  template:
    metadata: {labels: {app: unrelated}}
    spec:
      containers: [{name: web, image: nginx}]
"""


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not installed: it renders the overlays (kubectl kustomize)")
    proc = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _user_kustomization(tmp_path: Path) -> Path:
    (tmp_path / "deployments.yaml").write_text(USER_DEPLOYMENT)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "ml",
                "resources": ["deployments.yaml"],
                "components": [os.path.relpath(COMPONENT, tmp_path)],
            }
        )
    )
    return tmp_path


@pytest.mark.integration
def test_component_patches_the_labelled_deployment_only(tmp_path: Path) -> None:
    rendered = _kustomize(_user_kustomization(tmp_path))
    deployments = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Deployment"}
    assert set(deployments) == {"tracking", "unrelated"}  # none of its own
    pod = deployments["tracking"]["spec"]["template"]
    assert [c["name"] for c in pod["spec"]["containers"]] == [MONITOR, "tracking-server"]
    assert [c["name"] for c in deployments["unrelated"]["spec"]["template"]["spec"]["containers"]] == ["web"]
    monitor = pod["spec"]["containers"][0]
    assert "readinessProbe" not in monitor and "startupProbe" not in monitor  # never gates the user's server
    service = next(d for d in rendered if d["kind"] == "Service" and d["metadata"]["name"] == MONITOR)
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert all(d["metadata"].get("namespace") == "ml" for d in rendered)


@pytest.mark.integration
def test_sidecar_has_no_mlflow_container_of_its_own(tmp_path: Path) -> None:
    rendered = _kustomize(_user_kustomization(tmp_path))
    containers = [
        c
        for d in rendered
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        if c["name"] != MONITOR
    ]
    assert {c["name"] for c in containers} == {"tracking-server", "web"}
    assert not any("mlflow" in " ".join(c.get("command", []) + c.get("args", [])) for c in containers)
    # Nor does the component's folder hold a workload that could overwrite one.
    for path in COMPONENT.glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            if document and path.name != "monitor-sidecar-patch.yaml":
                assert document.get("kind") not in ("Deployment", "StatefulSet"), path


RENDERED = {
    "sidecar": DEPLOY / "examples" / "mlflow-sidecar",
    "standalone": DEPLOY / "kubernetes" / "standalone",
    "fleet": DEPLOY / "kubernetes" / "fleet",
}


@pytest.mark.integration
@pytest.mark.parametrize("overlay", sorted(RENDERED))
def test_release_label_for_kube_prometheus_stack_is_on(overlay: str) -> None:
    rendered = _kustomize(RENDERED[overlay])
    selected = [d for d in rendered if d["kind"] in ("ServiceMonitor", "PrometheusRule")]
    assert len(selected) == 2
    assert all(d["metadata"]["labels"].get("release") == "kube-prometheus-stack" for d in selected)


@pytest.mark.integration
def test_every_overlay_lists_the_same_alertmanager_members() -> None:
    receivers = {}
    for overlay, directory in RENDERED.items():
        configmap = next(d for d in _kustomize(directory) if d["kind"] == "ConfigMap")
        receivers[overlay] = yaml.safe_load(configmap["data"]["config.yaml"])["alerting"]["receivers"]
    assert receivers["sidecar"] == receivers["standalone"] == receivers["fleet"]
    members = receivers["fleet"]
    assert len(members) >= 2 and all(r["kind"] == "alertmanager" and r.get("name") for r in members)
    assert all(".alertmanager-operated." in r["url"] for r in members)  # each pod, not the Service
    local = yaml.safe_load((DEPLOY / "alertmanager" / "daemon-receivers.yaml").read_text())["alerting"]["receivers"]
    assert [r["name"] for r in local] == [r["name"] for r in members]
