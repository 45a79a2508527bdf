"""A report worth attaching (issue 23): header with the monitor, time, place and targets,
hints wrapped rather than cut, steps that never ran, runbook links only when configured."""

from __future__ import annotations

import datetime as dt
import json

from monitor.diagnosis import Diagnosis
from monitor.report import ProbeRuns, ReportHeader, TargetLine, render_json, render_markdown, render_table
from monitor.results import ProbeResult, Reason, StepResult

# MLflow 3's real answer to an unknown Host header plus the kind's hint, as the read probe reports it.
HINT = (
    "GET /health: HTTP 403: Invalid Host header - possible DNS rebinding attack detected; MLflow's"
    " --allowed-hosts does not include the host this monitor uses: start the server with"
    " --allowed-hosts 'mlflow.mlops.svc.cluster.local,mlflow.mlops.svc.cluster.local:5000' or probe it by an allowed name"
)
STEPS = ("health", "experiments_search", "registered_models_search", "runs_search", "version")
HEADER = ReportHeader(
    "0.1.0",
    dt.datetime(2026, 12, 3, 8, 30, 0, tzinfo=dt.UTC),
    "eu-west",
    None,
    (TargetLine("mlflow", "mlflow", "https://mlflow.example:5000", "3.17.2", 1_796_000_000.0),),
    None,
)


def _failed() -> ProbeRuns:
    result = ProbeResult(
        probe="mlflow_read",
        target="mlflow",
        scenario="mlflow_read",
        started_at=1_796_000_000.0,
        duration_seconds=0.01,
        steps=(StepResult("health", False, 0.01, Reason.HTTP_ERROR, HINT, 403, "GET", "/health"),),
        timeout_seconds=10.0,
        diagnosis=Diagnosis("mlflow_server", "the server refuses the monitor's Host header"),
    )
    return ProbeRuns("mlflow_read", "mlflow", "mlflow", "mlflow_read", (result,), STEPS)


def test_table_has_the_header_the_whole_hint_and_the_steps_not_run() -> None:
    table = render_table([_failed()], HEADER)
    lines = table.splitlines()
    assert lines[0] == "synthetic-monitor 0.1.0 check at 2026-12-03 08:30:00 UTC, location eu-west"
    assert lines[1] == (
        "target mlflow (mlflow) https://mlflow.example:5000, version 3.17.2, certificate expires 2026-11-30T00:53:20Z"
    )
    assert " ".join(table.split()).count(" ".join(HINT.split())) == 1  # every word, in order: wrapped, not cut
    assert max(len(line) for line in lines if "HTTP 403" in line) < len(HINT)
    not_run = [line.split()[1] for line in lines if "not run" in line]
    assert not_run == list(STEPS[1:])


def test_runbook_link_only_with_a_runbook_url() -> None:
    without = render_table([_failed()], HEADER)
    assert "(docs section #diagnosis-mlflow_server)" in without and "runbook" not in without
    linked = ReportHeader(**{**HEADER.__dict__, "runbook_url": "https://runbooks.example/synthetic-monitor"})
    assert "(runbook https://runbooks.example/synthetic-monitor#diagnosis-mlflow_server)" in render_table(
        [_failed()], linked
    )
    assert "(docs section #diagnosis-mlflow_server)" in render_markdown([_failed()], HEADER)


def test_markdown_and_json_carry_the_same_fields() -> None:
    markdown = render_markdown([_failed()], HEADER)
    assert "Generated 2026-12-03 08:30:00 UTC" in markdown
    assert "Monitor version 0.1.0, location eu-west." in markdown
    assert "| mlflow | mlflow | https://mlflow.example:5000 | 3.17.2 |" in markdown
    assert "| runs_search | - | - | - | - | - | NOT RUN |" in markdown
    assert HINT in markdown
    data = json.loads(render_json([_failed()], HEADER))
    assert data["report"] == {
        "monitor_version": "0.1.0",
        "generated_at": "2026-12-03T08:30:00Z",
        "location": "eu-west",
        "replica": None,
        "targets": [
            {
                "name": "mlflow",
                "kind": "mlflow",
                "url": "https://mlflow.example:5000",
                "version": "3.17.2",
                "tls_earliest_cert_expiry": "2026-11-30T00:53:20Z",
            }
        ],
    }
    probe = data["probes"][0]
    assert probe["not_run"] == list(STEPS[1:])
    assert probe["steps"][0]["error"] == HINT
    assert set(probe["steps"][0]) >= {"name", "ok", "reason", "error", "duration_seconds"}  # the contract keys
