"""Issue 24, a leaner run: each cut of the per-run cost keeps the behaviour, and each test
here failed on the code before the cut (by counting the work it removed).

- the per-probe series are rendered when a scrape asks for them, once per changed family,
  not after every run: 50 runs and one scrape cost one render per family that changed, and
  the scrape's bytes still equal prometheus-client's generate_latest.
"""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from monitor.events import JobEvent, ScheduleLag
from monitor.sinks import probe_series
from monitor.sinks.metrics import MetricsSink, ProbeSeries
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
