"""`synthetic-monitor slo rules` and the `slo:` config: generated file, promtool, contract.

- deploy/prometheus/slo.rules.yml equals what the command prints for the shipped config
  (deploy/kubernetes/base/config.yaml): a stale file fails here.
- `promtool check rules --lint-fatal` and `promtool test rules slo.rules.test.yml` (series
  burning at known rates, exactly which alerts fire, the sparse write probe) with the real
  promtool (Debian `prometheus`; skipped with a reason when missing).
- The objectives are validated like every config key (exit 2, naming the field).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.cli import main
from monitor.config import ConfigError, load_config
from monitor.slo.model import format_window, parse_window, resolve
from monitor.slo.rules import PAIRS, bucket_bound, build_rules, stretched

REPO = Path(__file__).resolve().parents[1]
PROM_DIR = REPO / "deploy" / "prometheus"
SLO_RULES = PROM_DIR / "slo.rules.yml"
SLO_TESTS = PROM_DIR / "slo.rules.test.yml"
SHIPPED_CONFIG = "deploy/kubernetes/base/config.yaml"
ALERTS = {"SyntheticProbeErrorBudgetBurn", "SyntheticProbeLatencyBudgetBurn"}
LONG_WINDOWS = {"1h": "critical", "6h": "critical", "1d": "warning", "3d": "warning"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed: apt-get install prometheus")
    return path


def _write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def _base(**slo: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "targets": [{"name": "mlflow", "kind": "mlflow", "url": "http://127.0.0.1:5000"}],
        "probes": [
            {"name": "mlflow_read", "target": "mlflow", "scenario": "mlflow_read", "interval": "30s"},
            {"name": "mlflow_write", "target": "mlflow", "scenario": "mlflow_write", "interval": "5m"},
        ],
    }
    if slo:
        doc["slo"] = slo
    return doc


def test_committed_rules_equal_the_command_output(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("SYNTHETIC_MONITOR_CONFIG", raising=False)
    assert main(["slo", "rules", "--config", SHIPPED_CONFIG]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == SLO_RULES.read_text(encoding="utf-8"), (
        f"deploy/prometheus/slo.rules.yml is stale: run `synthetic-monitor slo rules --config {SHIPPED_CONFIG}"
        " > deploy/prometheus/slo.rules.yml`, then deploy/kubernetes/base/generate_prometheusrule.py"
    )


def test_committed_unit_tests_equal_their_generator() -> None:
    spec = importlib.util.spec_from_file_location("generate_slo_rules_test", PROM_DIR / "generate_slo_rules_test.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == SLO_TESTS.read_text(encoding="utf-8"), (
        "slo.rules.test.yml is stale: run deploy/prometheus/generate_slo_rules_test.py"
    )


@pytest.mark.integration
def test_promtool_check_slo_rules() -> None:
    proc = subprocess.run(
        [_promtool(), "check", "rules", "--lint-fatal", str(SLO_RULES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.integration
def test_promtool_slo_rule_unit_tests() -> None:
    proc = subprocess.run(
        [_promtool(), "test", "rules", SLO_TESTS.name],
        cwd=PROM_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(SLO_RULES.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def annotations_of(rule: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = rule["annotations"]
    return annotations


@pytest.mark.integration
def test_the_sli_is_per_location_and_min_locations_comes_from_the_config(tmp_path: Path) -> None:
    doc = yaml.safe_load(SLO_RULES.read_text(encoding="utf-8"))
    records = [r for g in doc["groups"] for r in g["rules"] if "record" in r and "ratio_rate" in r["record"]]
    assert records and all("by (target, probe, location)" in r["expr"] for r in records)
    base = _base()
    base["location"] = "eu"
    base["peers"] = {"urls": ["http://127.0.0.1:9"], "min_locations": 3}
    path = _write(tmp_path, base)
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "slo", "rules", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    critical = [
        r
        for g in yaml.safe_load(done.stdout)["groups"]
        for r in g["rules"]
        if r.get("labels", {}).get("severity") == "critical"
    ]
    assert critical and all(", 3)" in r["expr"] for r in critical)


def test_alert_labels_and_annotations_follow_the_contract() -> None:
    rules = _alert_rules()
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        labels = rule["labels"]
        assert set(labels) == {"target", "probe", "severity", "long_window"}, rule
        # A critical pair also has its below-quorum warning (one location burning).
        assert labels["severity"] in (LONG_WINDOWS[labels["long_window"]], "warning")
        if labels["severity"] == "critical":
            assert "count by (target, probe)" in rule["expr"] and ", 2)" in rule["expr"], rule["expr"]
        else:
            assert "$labels.location" in annotations_of(rule)["summary"], rule
        annotations = rule["annotations"]
        assert "$labels" in annotations["description"] and annotations["summary"]
        runbook = "https://runbooks.example.internal/synthetic-monitor#" + rule["alert"].lower()
        assert annotations["runbook_url"] == runbook
    # every probe of the shipped config has the four pairs of both objectives
    probes = {p.name for p in load_config(REPO / SHIPPED_CONFIG).probes}
    seen = {(r["alert"], r["labels"]["probe"], r["labels"]["long_window"]) for r in rules}
    assert seen == {(a, p, w) for a in ALERTS for p in probes for w in LONG_WINDOWS}


def test_unit_tests_cover_every_alert_firing_and_quiet_and_the_sparse_probe() -> None:
    firing: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    sparse_quiet = False
    for case in yaml.safe_load(SLO_TESTS.read_text(encoding="utf-8"))["tests"]:
        for check in case.get("alert_rule_test") or []:
            for exp in check.get("exp_alerts") or []:
                firing.add((check["alertname"], exp["exp_labels"]["long_window"]))
            if not check.get("exp_alerts"):
                quiet.add(check["alertname"])
                sparse_quiet |= "mlflow_write" in " ".join(s["series"] for s in case["input_series"])
    assert {("SyntheticProbeErrorBudgetBurn", w) for w in LONG_WINDOWS} <= firing
    assert ("SyntheticProbeLatencyBudgetBurn", "1h") in firing
    assert quiet == ALERTS
    assert sparse_quiet, "no quiet case for the 5 min write probe"


def test_sparse_probe_windows_are_stretched_and_guarded(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, _base()))
    objectives = [resolve(config.slo, p) for p in config.probes]
    assert [stretched(300, o.interval) for o in objectives if o] == ["5m", "10m"]
    document, warnings = build_rules([o for o in objectives if o], config.metrics.buckets)
    assert warnings == []
    write = next(g for g in document["groups"] if g["name"].endswith("mlflow_write"))
    rate5m = next(r for r in write["rules"] if r.get("record", "").endswith("ratio_rate5m"))
    assert "[10m]" in rate5m["expr"] and "[5m]" not in rate5m["expr"]
    for rule in (r for r in write["rules"] if "alert" in r):
        assert "[1h])) >= 2\n" in rule["expr"] or "])) >= 2\n" in rule["expr"], rule["expr"]


def test_burn_thresholds_follow_the_workbook(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, _base(availability=99.9)))
    objective = resolve(config.slo, config.probes[0])
    assert objective is not None
    document, _ = build_rules([objective], config.metrics.buckets)
    # Without the below-quorum warnings (`unless` the quorum), one alert per pair of the workbook.
    alerts = [
        r for r in document["groups"][0]["rules"] if "alert" in r and "unless on (target, probe)\n(" not in r["expr"]
    ]
    assert [(r["labels"]["severity"], r["labels"]["long_window"]) for r in alerts] == [
        ("critical", "1h"),
        ("critical", "6h"),
        ("warning", "1d"),
        ("warning", "3d"),
    ]
    for rule, pair, short in zip(alerts, PAIRS, ("5m", "30m", "2h", "6h")):
        threshold = f"{pair.factor * 0.001:.6g}"
        assert f"ratio_rate{rule['labels']['long_window']}{{" in rule["expr"]
        assert f"ratio_rate{short}{{" in rule["expr"]
        assert rule["expr"].count(f"> {threshold}\n") == 2, rule["expr"]


def test_latency_threshold_is_rounded_to_a_bucket_with_a_warning(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, _base(latency={"threshold": "1200ms", "objective": 95}))
    assert main(["slo", "rules", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 2  # one line per probe
    assert "latency threshold 1.2s is not a bucket bound of metrics.buckets; using the nearest bound 1s" in err
    assert 'le="1.0"' in out and "1.2" not in out
    # A tie (0.75 s either way) goes to the lower, stricter bound, with the warning that says so.
    assert bucket_bound(1.75, [1.0, 2.5]) == (
        1.0,
        "latency threshold 1.75s is not a bucket bound of metrics.buckets; using the nearest bound 1s",
    )
    assert bucket_bound(2.5, [1.0, 2.5]) == (2.5, None)
    assert bucket_bound(100, [1.0, 60.0])[0] == 60.0


def test_per_probe_override_and_opt_out(tmp_path: Path) -> None:
    doc = _base(availability=99.0, window="7d", latency={"threshold": "1s"})
    doc["probes"][1]["slo"] = {"availability": 95, "latency": None}
    doc["probes"].append({"name": "other", "target": "mlflow", "scenario": "mlflow_read", "slo": {"enabled": False}})
    config = load_config(_write(tmp_path, doc))
    read, write, other = (resolve(config.slo, p) for p in config.probes)
    assert read is not None and write is not None and other is None
    assert (read.availability, read.window) == (0.99, 7 * 86400)
    assert (read.latency_threshold, read.latency_objective) == (1.0, 0.95)
    assert (write.availability, write.window, write.latency_threshold) == (0.95, 7 * 86400, None)


@pytest.mark.parametrize(
    ("slo", "probe_slo", "message"),
    [
        ({"availability": 100}, None, "slo.availability: must be above 0 and below 100"),
        ({"availability": 0}, None, "slo.availability: must be above 0 and below 100"),
        ({"latency": {"threshold": "1s", "objective": 100.5}}, None, "slo.latency.objective: must be above 0"),
        ({"window": "30x"}, None, "slo.window: "),
        ({"latency": {"objective": 95}}, None, "slo.latency.threshold: required but missing"),
        ({"burn": 1}, None, "slo.burn: unknown key"),
        (None, {"availability": -1}, "probes[1].slo.availability: must be above 0 and below 100"),
        (None, {"min_failures": 0}, "probes[1].slo.min_failures"),
    ],
)
def test_bad_objectives_exit_2_naming_the_field(tmp_path: Path, capsys, slo, probe_slo, message) -> None:
    doc = _base(**(slo or {}))
    if probe_slo is not None:
        doc["probes"][1]["slo"] = probe_slo
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError, match=None) as info:
        load_config(path)
    assert message in str(info.value)
    assert main(["slo", "rules", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_window_spelling() -> None:
    assert parse_window("30d") == 30 * 86400 and parse_window("4w") == 28 * 86400 and parse_window("12h") == 43200
    assert [format_window(s) for s in (300, 7200, 86400 * 3, 90)] == ["5m", "2h", "3d", "90s"]
