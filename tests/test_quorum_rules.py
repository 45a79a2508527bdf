"""The quorum rules are generated with the config's min_locations: shipped file fresh, promtool agrees.

`synthetic-monitor rules --config deploy/kubernetes/base/config.yaml --write
deploy/prometheus/rules.yml` writes the group synthetic-monitor.quorum; the committed file
must equal a fresh rendering. A config with `min_locations: 3` makes rules that page only
when three locations fail: promtool runs cases for 2 of 3 (warning) and 3 of 3 (critical).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.alerting.rules import GROUP, quorum_group, render_group, splice
from tests.servers import REPO

RULES = REPO / "deploy" / "prometheus" / "rules.yml"
BASE_CONFIG = "deploy/kubernetes/base/config.yaml"
PROMTOOL = shutil.which("promtool")


def test_the_shipped_rules_file_is_generated_from_the_base_config() -> None:
    text = RULES.read_text(encoding="utf-8")
    fresh = splice(text, render_group(2, BASE_CONFIG))
    assert text == fresh, (
        "deploy/prometheus/rules.yml is stale: run"
        f" `synthetic-monitor rules --config {BASE_CONFIG} --write deploy/prometheus/rules.yml`"
    )
    groups = [g["name"] for g in yaml.safe_load(text)["groups"]]
    assert groups.count(GROUP) == 1


@pytest.mark.integration
def test_the_cli_writes_min_locations_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": [{"name": "mlflow", "kind": "mlflow", "url": "http://127.0.0.1:5000"}],
                "probes": [{"name": "mlflow_read", "target": "mlflow", "scenario": "mlflow_read"}],
                "peers": {"urls": ["http://10.0.0.2:9356"], "min_locations": 3},
            }
        )
    )
    target = tmp_path / "rules.yml"
    shutil.copy(RULES, target)
    run = subprocess.run(
        [sys.executable, "-m", "monitor", "rules", "--config", str(config), "--write", str(target)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    text = target.read_text()
    assert "(min_locations 3)" in text and "synthetic_probe_consecutive_failures)), 3)" in text
    # Everything outside the generated group is kept as it was.
    assert text.split(f"# BEGIN {GROUP}")[0] == RULES.read_text().split(f"# BEGIN {GROUP}")[0]


def expected(alertname: str, severity: str, value: str, **labels: str) -> dict[str, Any]:
    """An exp_alerts entry with the annotations the generated rule renders for these labels."""
    rule = next(r for r in quorum_group(3)["rules"] if r["alert"] == alertname and r["labels"]["severity"] == severity)
    full = {"job": "synthetic-monitor", "target": "mlflow", "probe": "mlflow_read", **labels}

    def expand(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: full[m.group(1)], text)
        return text.replace("{{ $value }}", value)

    return {
        "exp_labels": {**full, **rule["labels"]},
        "exp_annotations": {k: expand(v) for k, v in rule["annotations"].items()},
    }


def cases() -> dict[str, Any]:
    def series(location: str, values: str) -> dict[str, str]:
        labels = f'job="synthetic-monitor",location="{location}",target="mlflow",probe="mlflow_read"'
        return {"series": f"synthetic_probe_consecutive_failures{{{labels}}}", "values": values}

    return {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                # a and b fail from t=15s; the third location c only from t=5m.
                "input_series": [series("a", "0 2+1x40"), series("b", "0 2+1x40"), series("c", "0x20 2+1x20")],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": "SyntheticProbeFailing", "exp_alerts": []},
                    {
                        "eval_time": "3m",
                        "alertname": "SyntheticProbeFailingFromOneLocation",
                        "exp_alerts": [
                            expected("SyntheticProbeFailingFromOneLocation", "warning", "13", location=loc)
                            for loc in ("a", "b")
                        ],
                    },
                    {
                        "eval_time": "8m",
                        "alertname": "SyntheticProbeFailing",
                        "exp_alerts": [expected("SyntheticProbeFailing", "critical", "3")],
                    },
                    {"eval_time": "8m", "alertname": "SyntheticProbeFailingFromOneLocation", "exp_alerts": []},
                ],
            }
        ],
    }


@pytest.mark.integration
@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
def test_min_locations_three_pages_on_three_of_three_only(tmp_path: Path) -> None:
    group = render_group(3, "test")
    (tmp_path / "rules.yml").write_text("groups:\n" + group)
    (tmp_path / "test.yml").write_text(yaml.safe_dump(cases(), sort_keys=False))
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "rules", "--lint-fatal", "rules.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([PROMTOOL, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
