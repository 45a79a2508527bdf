"""Issue 24, a leaner run: each cut of the per-run cost keeps the behaviour, and each test
here failed on the code before the cut (by counting the work it removed).

- the per-probe series are rendered when a scrape asks for them, once per changed family,
  not after every run: 50 runs and one scrape cost one render per family that changed, and
  the scrape's bytes still equal prometheus-client's generate_latest.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from monitor.events import JobEvent, ScheduleLag
from monitor.sinks import probe_series
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from tests.helpers import REPO
from tests.test_metrics_render import BUCKETS, STEPS, random_result


def test_runs_between_scrapes_render_each_changed_family_once(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry(auto_describe=True)
    sink = MetricsSink(registry, BUCKETS)
    sink.register(ProbeSeries("t", "p", STEPS, 5.0))
    sink.register(ProbeSeries("t", "idle", STEPS, 5.0))
    renders: list[int] = []
    real = probe_series._Probe.render

    def counting(self: probe_series._Probe, index: int) -> None:
        renders.append(index)
        real(self, index)

    monkeypatch.setattr(probe_series._Probe, "render", counting)
    rng = random.Random(7)
    for _ in range(50):
        sink.handle(random_result(rng, "t", "p"))
        sink.handle_event(ScheduleLag("p", 0.002))
    sink.handle_event(JobEvent("p", "missed"))
    assert renders == []  # nothing rendered on the probe path
    body = sink.render()
    assert sorted(renders) == sorted(set(renders)) and len(renders) <= len(probe_series.FAMILIES)
    assert body == generate_latest(registry)  # the same bytes as the library's own renderer
    renders.clear()
    assert sink.render() == body and renders == []  # nothing changed: no render at all


def test_a_probe_as_slow_as_a_scrape_is_rendered_as_it_runs_and_the_scrape_renders_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At 1,000 probes every 10 s each probe changes between two scrapes, so lazy rendering
    would re-render all of them while Prometheus waits; such a probe renders on its run
    (the same work, once per run) and the scrape only joins text."""
    registry = CollectorRegistry(auto_describe=True)
    sink = MetricsSink(registry, BUCKETS)
    sink.register(ProbeSeries("t", "slow", STEPS, 5.0, interval_seconds=probe_series.EAGER_INTERVAL))
    sink.register(ProbeSeries("t", "fast", STEPS, 0.5, interval_seconds=1.0))
    sink.render()
    renders: list[tuple[str, int]] = []
    real = probe_series._Probe.render

    def counting(self: probe_series._Probe, index: int) -> None:
        renders.append((self.probe, index))
        real(self, index)

    monkeypatch.setattr(probe_series._Probe, "render", counting)
    rng = random.Random(3)
    sink.handle(random_result(rng, "t", "slow"))
    sink.handle_event(ScheduleLag("slow", 0.002))
    sink.handle(random_result(rng, "t", "fast"))
    assert {p for p, _ in renders} == {"slow"}  # rendered on the run, the fast probe not
    renders.clear()
    body = sink.render()
    assert {p for p, _ in renders} == {"fast"}  # the scrape renders only the lazy probe
    assert body == generate_latest(registry)
    # A reload that only slows the fast probe keeps its numbers and makes it eager.
    runs = registry.get_sample_value(
        "synthetic_probe_runs_total", {"target": "t", "probe": "fast", "result": "success"}
    )
    sink.register(ProbeSeries("t", "fast", STEPS, 0.5, interval_seconds=30.0))
    assert (
        registry.get_sample_value("synthetic_probe_runs_total", {"target": "t", "probe": "fast", "result": "success"})
        == runs
    )
    renders.clear()
    sink.handle(random_result(rng, "t", "fast"))
    assert {p for p, _ in renders} == {"fast"}


@pytest.mark.integration
def test_a_daemon_without_tls_targets_or_checks_loads_no_certificate_cel_or_jsonpath_library(tmp_path: Path) -> None:
    """RSS with 40 probes was 71 MB against the 50 MB goal; cryptography (~8 MB), the CEL
    runtime (~6 MB) and JSONPath (~2 MB) were imported by every daemon. They load on first
    use now: a TLS connection, a config with `checks`."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "targets: [{name: m, kind: mlflow, url: 'http://127.0.0.1:9'}]\n"
        "probes: [{name: p, target: m, scenario: mlflow_read, interval: 1s}]\n"
    )
    code = (
        "import sys\n"
        "from monitor.config import load_config\n"
        "from monitor.daemon import Daemon\n"
        f"config = load_config({str(config)!r})\n"
        "daemon = Daemon(config)\n"
        "daemon._apply(config)\n"
        "print(sorted(m for m in ('cryptography', 'cel_expr_python', 'jsonpath_rfc9535') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
