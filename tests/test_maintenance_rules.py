"""The generated SLO rules leave maintenance windows out of pages and error budgets (promtool).

Two probes of the shipped config over two hours, evaluated every minute:
- asgard_api fails every run; a window covers it until 90m. Inside the window nothing
  burns; 35 min after it, the pairs whose short window no longer touches it page (1h and
  6h), the ones whose short window still does (2h, 6h short windows of 1d, 3d) do not.
- mlflow_read fails only inside its window (0-60m) and passes after it: no pair pages
  (without the exclusion the 1d/2h and 3d/6h warnings would), and its error budget is
  whole, because the budget counts only runs outside windows.
The promtool test file is written at test time from deploy/prometheus/slo.rules.yml, so
the expected annotations follow the generated rules.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROM_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
JOB = 'job="synthetic-monitor",instance="127.0.0.1:9356"'
END = 125
BURN = "SyntheticProbeErrorBudgetBurn"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed: apt-get install prometheus")
    return path


def _series(metric: str, labels: str, values: list[float]) -> dict[str, str]:
    return {"series": f"{metric}{{{JOB},{labels}}}", "values": " ".join(f"{v:g}" for v in values)}


def _counter(per_minute: Any) -> list[float]:
    out, total = [], 0.0
    for minute in range(END + 1):
        total += per_minute(minute) if minute else 0
        out.append(total)
    return out


def _expected(rules: dict[str, Any], probe: str, window: str) -> dict[str, Any]:
    rule = next(
        r
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert") == BURN and r["labels"]["probe"] == probe and r["labels"]["long_window"] == window
    )
    labels = dict(rule["labels"])

    def expand(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)

    return {"exp_labels": labels, "exp_annotations": {k: expand(v) for k, v in rule["annotations"].items()}}


@pytest.mark.integration
def test_slo_rules_leave_maintenance_out_of_pages_and_budget(tmp_path: Path) -> None:
    promtool = _promtool()
    shutil.copy(PROM_DIR / "slo.rules.yml", tmp_path / "slo.rules.yml")
    rules = yaml.safe_load((PROM_DIR / "slo.rules.yml").read_text(encoding="utf-8"))
    asgard = 'target="asgard",probe="asgard_api"'
    read = 'target="mlflow",probe="mlflow_read"'
    runs = "synthetic_probe_runs_total"
    maintenance = "synthetic_probe_maintenance"
    series = [
        _series(runs, asgard + ',result="failure"', _counter(lambda m: 2)),
        _series(runs, asgard + ',result="success"', _counter(lambda m: 0)),
        _series(maintenance, asgard, [1.0 if m <= 90 else 0.0 for m in range(END + 1)]),
        _series(runs, read + ',result="failure"', _counter(lambda m: 2 if m <= 60 else 0)),
        _series(runs, read + ',result="success"', _counter(lambda m: 0 if m <= 60 else 2)),
        _series(maintenance, read, [1.0 if m <= 60 else 0.0 for m in range(END + 1)]),
    ]
    document = {
        "rule_files": ["slo.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "maintenance windows: no burn inside, pages after only where the short window is clear",
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "60m", "alertname": BURN, "exp_alerts": []},
                    {
                        "eval_time": f"{END}m",
                        "alertname": BURN,
                        "exp_alerts": [_expected(rules, "asgard_api", w) for w in ("1h", "6h")],
                    },
                ],
                "promql_expr_test": [
                    {
                        # mlflow_read failed 60 min inside its window only: its budget is whole.
                        "expr": 'target_probe:synthetic_probe_error_budget_remaining:ratio{probe="mlflow_read"}',
                        "eval_time": f"{END}m",
                        "exp_samples": [
                            {
                                "labels": "target_probe:synthetic_probe_error_budget_remaining:ratio"
                                '{target="mlflow",probe="mlflow_read",slo_window="30d"}',
                                "value": 1,
                            }
                        ],
                    },
                    {
                        # The raw 2h ratio is well above the 1d/2h threshold: only the window keeps it quiet.
                        "expr": 'target_probe:synthetic_probe_runs_failure_per_runs:ratio_rate2h{probe="mlflow_read"}'
                        " > 0.015",
                        "eval_time": f"{END}m",
                        "exp_samples": [
                            {
                                "labels": "target_probe:synthetic_probe_runs_failure_per_runs:ratio_rate2h"
                                '{target="mlflow",probe="mlflow_read"}',
                                "value": 0.4583333333333333,
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "maintenance.test.yml"
    test_file.write_text(yaml.safe_dump(document, sort_keys=False, width=200), encoding="utf-8")
    done = subprocess.run(
        [promtool, "test", "rules", test_file.name], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
