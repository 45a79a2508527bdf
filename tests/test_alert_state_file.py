"""The alert state file when it is not what the daemon wrote: JSON of the wrong shape,
bytes it cannot read, a path it cannot write. What the sink promises: it starts empty
with one error line that names the file (moved aside, not overwritten), and alerting keeps working (a state file is a
convenience across restarts, never a reason to stop paging)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog.testing
from prometheus_client import CollectorRegistry

from monitor.alerting.alerts import PROBE_FAILING
from monitor.alerting.sink import AlertSink
from tests.test_alert_engine import PROBES, Clock, cfg, fail, firing_gauge

WRONG_SHAPES = {
    "a list": [],
    "a number": 7,
    "no format": {"saved_at": 1.0, "states": []},
    "saved_at not a number": {"format": 1, "saved_at": "yesterday", "states": []},
    "states not a list": {"format": 1, "saved_at": 1.0, "states": 5},
    "a state without its keys": {"format": 1, "saved_at": 1.0, "states": [{"bad": 2}]},
    "labels not a mapping": {
        "format": 1,
        "saved_at": 1.0,
        "states": [{"alertname": "A", "target": "t", "probe": "p", "labels": ["x"], "starts_at": 1.0}],
    },
}


async def _start_and_fire(path: Path) -> tuple[list[dict[str, object]], CollectorRegistry]:
    """Start a sink on `path`, then fail twice (threshold 2): the page must still fire."""
    registry = CollectorRegistry()
    sink = AlertSink(cfg(state_file=str(path)), registry, clock=Clock())
    with structlog.testing.capture_logs() as logs:
        await sink.start(PROBES)
        started_empty = sink.firing() == []
        sink.handle(fail())
        sink.handle(fail())
        await sink.flush_state()
        await sink.stop()
    assert started_empty
    assert [a.name for a in sink.firing()] == [PROBE_FAILING]
    return logs, registry


@pytest.mark.parametrize("document", WRONG_SHAPES.values(), ids=WRONG_SHAPES.keys())
async def test_json_of_the_wrong_shape_starts_empty_with_one_error(tmp_path: Path, document: object) -> None:
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps(document))
    logs, registry = await _start_and_fire(path)
    [warning] = [e for e in logs if e["event"] == "alert_state_unusable"]
    assert warning["log_level"] == "error" and warning["path"] == str(path)
    assert warning["moved_to"] and json.loads(Path(str(warning["moved_to"])).read_text()) == document
    assert firing_gauge(registry, PROBE_FAILING, "mlflow_read") == 1


async def test_bytes_that_are_not_text_are_unusable_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    logs, _ = await _start_and_fire(path)
    [warning] = [e for e in logs if e["event"] == "alert_state_unusable"]
    assert "cannot read" in warning["error"]


async def test_a_state_file_that_cannot_be_saved_is_logged_once_and_counted(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    path = blocker / "alerts.json"
    registry = CollectorRegistry()
    clock = Clock()
    sink = AlertSink(cfg(state_file=str(path)), registry, clock=clock)
    with structlog.testing.capture_logs() as logs:
        await sink.start(PROBES)
        for _ in range(3):  # three state changes, three failed writes
            sink.handle(fail())
            await sink.flush_state()
            clock.now += 1
        await sink.stop()
    errors = [e for e in logs if e["event"] == "alert_state_save_failed"]
    assert len(errors) == 1, errors  # once per distinct problem, not once per run
    assert errors[0]["path"] == str(path)
    assert errors[0]["error"].startswith(("NotADirectoryError", "FileExistsError")), errors[0]
    assert (registry.get_sample_value("synthetic_monitor_sink_errors_total", {"sink": "alerting"}) or 0) >= 3
    assert [a.name for a in sink.firing()] == [PROBE_FAILING]  # alerting went on without its file
