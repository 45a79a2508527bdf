"""`synthetic-monitor slo report` against a real Prometheus holding 30 days of known history.

The history (two probes, a sample every 3 minutes) is generated here with a fixed seed,
written as OpenMetrics, backfilled with `promtool tsdb create-blocks-from openmetrics`
and served by a real `prometheus` on 127.0.0.1. The report's figures are compared with
the ones counted from the generated history: runs, failures, availability, budget used,
the worst day, failures by step and reason, and the latency percentiles (interpolated in
the buckets like histogram_quantile).
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import io
import json
import math
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from monitor.cli import main
from tests.servers import Proc, free_port, start_proc

# A real Prometheus holds the history; the report runs as a subprocess.
pytestmark = [pytest.mark.integration]


DAY = 86400
SAMPLE = 180  # seconds between samples ("scrapes")
# Scrapes are not aligned with the window's edges: with samples exactly on them even
# increase() would be exact, and the test could not tell extrapolation from counting.
OFFSET = 77
WINDOW_DAYS = 30
BUCKETS = (0.1, 0.5, 1.0, 5.0)
JOB = 'job="synthetic-monitor",instance="127.0.0.1:9356"'
# The history ends at a UTC midnight two days ago (whole days for the worst-day table).
END = (int(time.time()) // DAY - 2) * DAY
START = END - WINDOW_DAYS * DAY - 3600  # an hour of history before the window opens


@dataclass
class History:
    """One probe's cumulative counters at every sample time."""

    target: str
    probe: str
    interval: int
    times: list[int] = field(default_factory=list)
    success: list[int] = field(default_factory=list)
    failure: list[int] = field(default_factory=list)
    steps: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    buckets: list[list[int]] = field(default_factory=list)  # per sample: cumulative per bound, +Inf last

    def _latest(self, ts: int) -> int:
        """Index of the last sample at or before ts (what an instant query at ts sees)."""
        index = bisect.bisect_right(self.times, ts) - 1
        assert index >= 0 and ts - self.times[index] < 300, ts
        return index

    def at(self, series: list[int], ts: int) -> int:
        return series[self._latest(ts)]

    def bucket_at(self, ts: int) -> list[int]:
        return self.buckets[self._latest(ts)]


def generate(
    target: str,
    probe: str,
    interval: int,
    fail_p: float,
    outage: tuple[int, int] | None,
    steps: list[tuple[str, str]],
    slow: float,
    seed: int,
) -> History:
    """Runs every `interval`; each fails with fail_p (always inside `outage`), at a random (step, reason)."""
    rng = random.Random(seed)
    history = History(target, probe, interval)
    ok = bad = 0
    per_step = {s: 0 for s in steps}
    hist = [0] * (len(BUCKETS) + 1)
    next_run = START + interval
    for ts in range(START + OFFSET, END + 1, SAMPLE):
        while next_run <= ts:
            failed = (outage is not None and outage[0] <= next_run < outage[1]) or rng.random() < fail_p
            if failed:
                bad += 1
                per_step[rng.choice(steps)] += 1
            else:
                ok += 1
            duration = rng.expovariate(1 / slow)
            for i, bound in enumerate(BUCKETS):
                if duration <= bound:
                    hist[i] += 1
            hist[-1] += 1
            next_run += interval
        history.times.append(ts)
        history.success.append(ok)
        history.failure.append(bad)
        for s in steps:
            history.steps.setdefault(s, []).append(per_step[s])
        history.buckets.append(list(hist))
    return history


def openmetrics(histories: list[History]) -> Iterator[str]:
    def labels(h: History, **extra: str) -> str:
        return (
            "{"
            + ",".join([JOB, f'target="{h.target}"', f'probe="{h.probe}"', *(f'{k}="{v}"' for k, v in extra.items())])
            + "}"
        )

    yield "# TYPE synthetic_probe_runs counter\n"
    for h in histories:
        for result, series in (("success", h.success), ("failure", h.failure)):
            for ts, value in zip(h.times, series):
                yield f"synthetic_probe_runs_total{labels(h, result=result)} {value} {ts}\n"
    yield "# TYPE synthetic_probe_step_failures counter\n"
    for h in histories:
        for (step, reason), series in h.steps.items():
            for ts, value in zip(h.times, series):
                yield f"synthetic_probe_step_failures_total{labels(h, step=step, reason=reason)} {value} {ts}\n"
    yield "# TYPE synthetic_probe_duration_seconds histogram\n"
    for h in histories:
        for ts, counts in zip(h.times, h.buckets):
            for bound, count in zip([*BUCKETS, math.inf], counts):
                le = "+Inf" if math.isinf(bound) else repr(float(bound))
                yield f"synthetic_probe_duration_seconds_bucket{labels(h, le=le)} {count} {ts}\n"
            yield f"synthetic_probe_duration_seconds_count{labels(h)} {counts[-1]} {ts}\n"
            yield f"synthetic_probe_duration_seconds_sum{labels(h)} 0 {ts}\n"
    yield "# EOF\n"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed: apt-get install prometheus")
    return path


HISTORIES = [
    # 30 s read probe: rare failures plus a 4-hour outage on day 12: misses 99.5 %
    generate(
        "mlflow",
        "mlflow_read",
        30,
        0.001,
        (END - 18 * DAY + 3 * 3600, END - 18 * DAY + 7 * 3600),
        [("health", "unreachable"), ("experiments_search", "timeout"), ("experiments_search", "worker_failure")],
        slow=0.1,
        seed=1,
    ),
    # 5 min write probe: a few failures, meets 99.5 %
    generate("mlflow", "mlflow_write", 300, 0.002, None, [("runs_get", "validation_failed")], slow=1.5, seed=2),
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    promtool, binary = _tool("promtool"), _tool("prometheus")
    work = tmp_path_factory.mktemp("slo-prometheus")
    source = work / "history.om"
    with source.open("w", encoding="utf-8") as fh:
        fh.writelines(openmetrics(HISTORIES))
    data = work / "data"
    backfill = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=768h", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    config = work / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1m}\n", encoding="utf-8")
    port = free_port()
    proc: Proc = start_proc(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            "--storage.tsdb.retention.time=3650d",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        work,
        f"http://127.0.0.1:{port}/-/ready",
        timeout=60,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def run_report(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The command in-process (the CLI's own main; no interpreter start per call)."""
    argv = ["slo", "report", *args] + (["--config", str(config)] if config is not None else [])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("slo-config") / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "metrics": {"buckets": list(BUCKETS)},
                "targets": [{"name": "mlflow", "kind": "mlflow", "url": "http://127.0.0.1:5000"}],
                "probes": [
                    {"name": "mlflow_read", "target": "mlflow", "scenario": "mlflow_read", "interval": "30s"},
                    {
                        "name": "mlflow_write",
                        "target": "mlflow",
                        "scenario": "mlflow_write",
                        "interval": "5m",
                        "slo": {"latency": {"threshold": "5s", "objective": 90}},
                    },
                ],
                "slo": {"availability": 99.5, "window": "30d", "latency": {"threshold": "500ms", "objective": 95}},
            }
        ),
        encoding="utf-8",
    )
    return path


def quantile(q: float, counts: list[int]) -> float:
    """histogram_quantile over cumulative counts (BUCKETS then +Inf), written out independently."""
    total = counts[-1]
    rank = q * total
    previous_bound, previous_count = 0.0, 0
    for bound, count in zip(BUCKETS, counts):
        if count >= rank:
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return BUCKETS[-1]


def expected(h: History, window_days: int, objective: float, latency_bound: float) -> dict[str, object]:
    start = END - window_days * DAY
    runs = (h.at(h.success, END) + h.at(h.failure, END)) - (h.at(h.success, start) + h.at(h.failure, start))
    failures = h.at(h.failure, END) - h.at(h.failure, start)
    days = []
    for day_start in range(start, END, DAY):
        n = sum(h.at(s, day_start + DAY) - h.at(s, day_start) for s in (h.success, h.failure))
        f = h.at(h.failure, day_start + DAY) - h.at(h.failure, day_start)
        days.append((1 - f / n, -f, day_start, n, f))
    worst = min(days)
    counts = [a - b for a, b in zip(h.bucket_at(END), h.bucket_at(start))]
    steps = {f"{s}/{r}": h.at(series, END) - h.at(series, start) for (s, r), series in h.steps.items()}
    return {
        "runs": runs,
        "failures": failures,
        "availability": 1 - failures / runs,
        "budget_consumed": (failures / runs) / (1 - objective),
        "worst_day": (worst[2], worst[3], worst[4]),
        "steps": {k: v for k, v in steps.items() if v > 0},
        "quantiles": {f"p{int(q * 100)}": quantile(q, counts) for q in (0.5, 0.95, 0.99)},
        "within": counts[BUCKETS.index(latency_bound)] / counts[-1],
    }


def test_report_figures_equal_the_generated_history(prometheus: str, config_file: Path) -> None:
    proc = run_report(
        "--prometheus", prometheus, "--window", "30d", "--end", str(END), "--format", "json", config=config_file
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # mlflow_read missed its objective
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["window"] == "30d"
    by_probe = {p["probe"]: p for p in report["probes"]}
    assert set(by_probe) == {"mlflow_read", "mlflow_write"}
    for h, bound, latency_objective in ((HISTORIES[0], 0.5, 0.95), (HISTORIES[1], 5.0, 0.90)):
        got, want = by_probe[h.probe], expected(h, WINDOW_DAYS, 0.995, bound)
        assert got["runs"] == want["runs"] and got["failures"] == want["failures"], h.probe
        assert got["availability"] == pytest.approx(want["availability"], rel=1e-12)
        assert got["budget_consumed"] == pytest.approx(want["budget_consumed"], rel=1e-9)
        day_start, day_runs, day_failures = want["worst_day"]  # type: ignore[misc]
        assert (got["worst_day"]["runs"], got["worst_day"]["failures"]) == (day_runs, day_failures), h.probe
        assert got["worst_day"]["start"] == dt.datetime.fromtimestamp(day_start, dt.UTC).isoformat()
        assert {f"{s['step']}/{s['reason']}": s["count"] for s in got["failures_by_step"]} == want["steps"]
        for key, value in want["quantiles"].items():  # type: ignore[union-attr]
            assert got["latency"][key] == pytest.approx(value, rel=1e-9), (h.probe, key)
        assert got["latency"]["threshold"] == bound and got["latency"]["objective"] == latency_objective
        assert got["latency"]["within"] == pytest.approx(want["within"], rel=1e-12)
    read, write = by_probe["mlflow_read"], by_probe["mlflow_write"]
    assert read["met"] is False and read["availability"] < 0.995  # the 4-hour outage
    assert read["latency"]["met"] is True and write["met"] is True
    # the outage day is the read probe's worst day: 480 failed runs plus the random ones
    assert read["worst_day"]["failures"] >= 480


def test_report_markdown_and_exit_zero_when_met(prometheus: str, config_file: Path) -> None:
    # The 7 days before the end hold no outage: both probes meet their objectives.
    proc = run_report(
        "--prometheus", prometheus, "--window", "7d", "--end", str(END), "--format", "markdown", config=config_file
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert text.index("## Summary") < text.index("## Failures by step") < text.index("## Latency")
    summary = text.split("## Summary")[1].split("##")[0]
    assert "| mlflow_read | mlflow |" in summary and "| mlflow_write | mlflow |" in summary
    assert "Every objective was met." in text
    h = HISTORIES[1]
    want = expected(h, 7, 0.995, 5.0)
    assert f"| mlflow_write | mlflow | {want['runs']} | {want['failures']} |" in summary


def test_report_table_format(prometheus: str, config_file: Path) -> None:
    proc = run_report("--prometheus", prometheus, "--window", "7d", "--end", str(END), config=config_file)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[2].split()[:3] == ["PROBE", "TARGET", "RUNS"]
    assert lines[3].split()[:2] == ["mlflow_read", "mlflow"] and lines[3].split()[-1] == "met"
    assert "2/2 probes met their objectives" in proc.stdout


def test_report_unreachable_prometheus_exits_2(config_file: Path) -> None:
    proc = run_report("--prometheus", f"http://127.0.0.1:{free_port()}", config=config_file)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Prometheus at http://127.0.0.1:" in lines[0], proc.stderr


def test_report_prometheus_error_exits_2(prometheus: str, config_file: Path) -> None:
    # Not Prometheus' API root: the path answers 404 with a text body.
    proc = run_report("--prometheus", prometheus + "/not-prometheus", config=config_file)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "answered HTTP 404" in lines[0], proc.stderr


def test_report_no_data_in_window_exits_2(prometheus: str, config_file: Path) -> None:
    proc = run_report("--prometheus", prometheus, "--window", "1d", "--end", str(START - DAY), config=config_file)
    assert proc.returncode == 2
    assert "has no synthetic_probe_runs_total data" in proc.stderr.strip()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--window", "30x"), "--window expected a window like 30d, 4w or 12h, got '30x'"),
        (("--window", "90s"), "--window must be a whole number of minutes, at least 2m"),
        (("--end", "yesterday"), "--end: expected RFC 3339, a date or Unix seconds, got 'yesterday'"),
    ],
)
def test_report_bad_arguments_exit_2(config_file: Path, args: tuple[str, ...], message: str) -> None:
    proc = run_report("--prometheus", "http://127.0.0.1:9", *args, config=config_file)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
