"""Checks of the Prometheus rules and the Alertmanager example with the real tools.

- promtool: `check rules`, `test rules` (deploy/prometheus/rules.test.yml), `check config`
- amtool: `check-config`, routing of critical/warning alerts
- a real Alertmanager (when installed): the MLflow -> Asgard inhibit rule
- contract: every alert named in shared/design.md exists in rules.yml, has severity,
  summary, description, runbook_url, and rules.test.yml has a firing and a quiet case
  for it.

The binaries come from the Debian packages `prometheus` (promtool) and
`prometheus-alertmanager` (amtool, alertmanager); tests that need one skip with a
visible reason when it is missing. CI installs them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.helpers import wait_for
from tests.servers import free_port, start_proc

REPO_ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = PROM_DIR / "rules.yml"
RULES_TEST = PROM_DIR / "rules.test.yml"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
AM_CONFIG = REPO_ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

# The alert names are a contract (design.md, "Alerting"): the daemon's engine, the
# dashboard and the docs use the same names.
EXPECTED_ALERTS = {
    "SyntheticProbeFailing",
    "SyntheticProbeTimeout",
    "MLflowWorkerFailure",
    "AsgardDependencyUnavailable",
    "MLflowDependencyUnavailable",
    "SyntheticProbeLatencyHigh",
    "SyntheticMonitorStalled",
    "SyntheticMonitorDown",
    "SyntheticMonitorSinkFailing",
    "SyntheticProbeFailingFromOneLocation",
    "SyntheticMonitorWatchdog",
    "MLflowVersionSkew",
    "SyntheticTargetCertificateExpiring",
}
SEVERITIES = {"critical", "warning"}
# Fires all the time by design (a dead-man's switch): no quiet case, severity none.
ALWAYS_FIRING = {"SyntheticMonitorWatchdog"}
RUNBOOK_BASE = "https://runbooks.example.internal/synthetic-monitor#"
# level:metric:operations (https://prometheus.io/docs/practices/rules/)
RECORD_NAME = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")

APT_HINT = {
    "promtool": "apt-get install prometheus",
    "amtool": "apt-get install prometheus-alertmanager",
    "alertmanager": "apt-get install prometheus-alertmanager",
}


def _tool(name: str, *alternatives: str) -> str:
    for candidate in (name, *alternatives):
        path = shutil.which(candidate)
        if path:
            return path
    pytest.skip(f"{name} not installed: {APT_HINT[name]}")


def _run(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc


def _load(path: Path) -> dict:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _rules() -> list[dict]:
    return [rule for group in _load(RULES)["groups"] for rule in group["rules"]]


def _alert_rules() -> list[dict]:
    return [rule for rule in _rules() if "alert" in rule]


# --------------------------------------------------------------------- real tools


@pytest.mark.integration
def test_promtool_check_rules():
    promtool = _tool("promtool")
    # --lint-fatal: duplicate rules (same name and labels) fail the check.
    _run(promtool, "check", "rules", "--lint-fatal", str(RULES))


@pytest.mark.integration
def test_promtool_rule_unit_tests():
    promtool = _tool("promtool")
    proc = _run(promtool, "test", "rules", RULES_TEST.name, cwd=PROM_DIR)
    assert "SUCCESS" in proc.stdout


@pytest.mark.integration
def test_promtool_check_prometheus_config():
    promtool = _tool("promtool")
    # Also checks rule_files (resolved relative to the config file).
    _run(promtool, "check", "config", str(PROM_CONFIG))


@pytest.mark.integration
def test_amtool_check_config():
    amtool = _tool("amtool")
    _run(amtool, "check-config", str(AM_CONFIG))


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["alertname=SyntheticProbeFailing", "severity=critical"], "oncall-pager,synthetic-webhook"),
        (["alertname=MLflowWorkerFailure", "severity=critical"], "oncall-pager,synthetic-webhook"),
        (["alertname=SyntheticProbeTimeout", "severity=warning"], "synthetic-webhook"),
        (["alertname=SyntheticMonitorWatchdog", "severity=none"], "deadmans-switch"),
    ],
)
@pytest.mark.integration
def test_alertmanager_routing(labels, receivers):
    amtool = _tool("amtool")
    _run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={AM_CONFIG}",
        f"--verify.receivers={receivers}",
        *labels,
    )


def _http(method: str, url: str, body: object | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


@pytest.fixture
def alertmanager(tmp_path):
    binary = _tool("alertmanager", "prometheus-alertmanager")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        binary,
        f"--config.file={AM_CONFIG}",
        f"--storage.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    proc = start_proc("alertmanager", command, tmp_path, f"{base}/-/ready")
    try:
        yield base
    finally:
        proc.stop()


@pytest.mark.integration
def test_mlflow_outage_inhibits_asgard_dependency_alert(alertmanager):
    """A down MLflow pages once: the Asgard `dependency=mlflow` symptom is muted."""
    now = datetime.now(UTC)
    window = {
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=10)).isoformat(),
    }

    def alert(**labels: str) -> dict:
        return {"labels": labels, "annotations": {"summary": "test"}, **window}

    _http(
        "POST",
        f"{alertmanager}/api/v2/alerts",
        [
            # sources
            alert(
                alertname="SyntheticProbeFailing",
                severity="critical",
                target="mlflow",
                probe="mlflow_read",
                namespace="prod",
            ),
            alert(
                alertname="MLflowWorkerFailure",
                severity="critical",
                target="mlflow",
                probe="mlflow_write",
                step="runs_create",
                reason="worker_failure",
                namespace="staging",
            ),
            # muted: same namespace as an MLflow source
            alert(
                alertname="AsgardDependencyUnavailable",
                severity="warning",
                target="asgard",
                dependency="mlflow",
                namespace="prod",
            ),
            alert(
                alertname="AsgardDependencyUnavailable",
                severity="warning",
                target="asgard",
                dependency="mlflow",
                namespace="staging",
            ),
            # not muted: other dependency / environment without an MLflow alert
            alert(
                alertname="AsgardDependencyUnavailable",
                severity="warning",
                target="asgard",
                dependency="feast",
                namespace="prod",
            ),
            alert(
                alertname="AsgardDependencyUnavailable",
                severity="warning",
                target="asgard",
                dependency="mlflow",
                namespace="dev",
            ),
            # a failing Asgard probe is not an MLflow outage
            alert(
                alertname="SyntheticProbeFailing",
                severity="critical",
                target="asgard",
                probe="asgard_api",
                namespace="qa",
            ),
            alert(
                alertname="AsgardDependencyUnavailable",
                severity="warning",
                target="asgard",
                dependency="mlflow",
                namespace="qa",
            ),
        ],
    )

    def states() -> dict[tuple[str, str, str], str]:
        alerts = _http("GET", f"{alertmanager}/api/v2/alerts")
        return {
            (
                a["labels"]["alertname"],
                a["labels"].get("dependency", a["labels"].get("target")),
                a["labels"]["namespace"],
            ): a["status"]["state"]
            for a in alerts
        }

    expected = {
        ("SyntheticProbeFailing", "mlflow", "prod"): "active",
        ("MLflowWorkerFailure", "mlflow", "staging"): "active",
        ("AsgardDependencyUnavailable", "mlflow", "prod"): "suppressed",
        ("AsgardDependencyUnavailable", "mlflow", "staging"): "suppressed",
        ("AsgardDependencyUnavailable", "feast", "prod"): "active",
        ("AsgardDependencyUnavailable", "mlflow", "dev"): "active",
        ("SyntheticProbeFailing", "asgard", "qa"): "active",
        ("AsgardDependencyUnavailable", "mlflow", "qa"): "active",
    }
    wait_for(
        lambda: states() == expected,
        timeout=30,
        interval=0.2,
        what="the inhibited states",
        context=lambda: str(states()),
    )


# ------------------------------------------------------------ contract / structure


def test_every_expected_alert_is_defined():
    defined = {rule["alert"] for rule in _alert_rules()}
    assert defined == EXPECTED_ALERTS, (
        f"missing: {sorted(EXPECTED_ALERTS - defined)}, unexpected: {sorted(defined - EXPECTED_ALERTS)}"
    )


def test_every_alert_is_unit_tested_firing_and_quiet():
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in _load(RULES_TEST)["tests"]:
        for check in case.get("alert_rule_test") or []:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    defined = {rule["alert"] for rule in _alert_rules()}
    assert not defined - firing, f"no firing test case for: {sorted(defined - firing)}"
    assert not defined - quiet - ALWAYS_FIRING, f"no quiet test case for: {sorted(defined - quiet)}"
    assert not quiet & ALWAYS_FIRING, "an always-firing alert was expected quiet"


def test_firing_test_cases_expect_rule_severity():
    # One alert name may have one rule per dependency with its own severity
    # (MLflowDependencyUnavailable: backend_store critical, artifact_store warning).
    # A quorum alert (generated group) has a critical rule over locations and a warning
    # rule per location: the warning keeps the `location` label, the critical drops it. One
    # name may also have one rule per threshold (SyntheticTargetCertificateExpiring: warning
    # under 14 days, critical under 3): a case then expects one of that name's severities.
    severity: dict[tuple[str, str, bool], set[str]] = {}
    for rule in _alert_rules():
        dependency = re.search(r'dependency="([a-z_]+)"', rule["expr"])
        per_location = rule["expr"].startswith("max by (") and "location)" in rule["expr"].split("\n")[0]
        key = (rule["alert"], dependency.group(1) if dependency else "", per_location)
        severity.setdefault(key, set()).add(rule["labels"]["severity"])
    for case in _load(RULES_TEST)["tests"]:
        for check in case.get("alert_rule_test") or []:
            for exp in check.get("exp_alerts") or []:
                name, dependency = check["alertname"], exp["exp_labels"].get("dependency", "")
                located = "location" in exp["exp_labels"]
                expected = next(
                    severity[k]
                    for k in (
                        (name, dependency, located),
                        (name, dependency, False),
                        (name, "", located),
                        (name, "", False),
                    )
                    if k in severity
                )
                assert exp["exp_labels"]["severity"] in expected, case["name"]


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_and_annotations(rule):
    if rule["alert"] in ALWAYS_FIRING:
        assert rule["expr"] == "vector(1)" and rule["labels"]["severity"] == "none" and "for" not in rule
    else:
        assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{rule['alert']}: missing {key}"
    assert "$labels" in annotations["description"], "description should use $labels"
    assert annotations["runbook_url"] == RUNBOOK_BASE + rule["alert"].lower()


def test_recording_rule_names_follow_convention():
    records = [rule["record"] for rule in _rules() if "record" in rule]
    assert records, "expected recording rules for the dashboard"
    for name in records:
        assert RECORD_NAME.match(name), f"{name} is not level:metric:operations"


def test_prometheus_config_matches_rules():
    config = _load(PROM_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # SyntheticMonitorDown selects up{job="synthetic-monitor"}
    assert "synthetic-monitor" in jobs
    down = next(r for r in _alert_rules() if r["alert"] == "SyntheticMonitorDown")
    assert 'job="synthetic-monitor"' in down["expr"]
    targets = [t for sc in jobs["synthetic-monitor"]["static_configs"] for t in sc["targets"]]
    assert targets == ["127.0.0.1:9356"]
    assert config["rule_files"] == ["rules.yml", "slo.rules.yml"]


def test_alertmanager_config_refers_to_real_alerts():
    config = _load(AM_CONFIG)
    assert config["route"]["group_by"] == ["alertname", "target", "probe"]
    names_in_inhibits = set()
    for rule in config["inhibit_rules"]:
        for matcher in rule.get("source_matchers", []) + rule.get("target_matchers", []):
            m = re.fullmatch(r'alertname=~?"([^"]+)"', matcher.replace(" ", ""))
            if m:
                names_in_inhibits.update(m.group(1).split("|"))
    assert names_in_inhibits, "no alertname matcher in inhibit_rules"
    assert names_in_inhibits <= EXPECTED_ALERTS, names_in_inhibits - EXPECTED_ALERTS
