"""`synthetic-monitor slo report`: the objectives over a past window, from Prometheus.

Counts are exact, not `increase()` estimates: `increase` extrapolates to the window's
edges, which turns 43 200 runs into 43 201.4. Each counter is differenced once a minute
inside a subquery (a reset counts the value after it, as `increase` does) and summed,
so a window holds exactly the runs recorded in (end - window, end]. Latency percentiles
are interpolated inside the duration buckets the way `histogram_quantile` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.slo.model import Objectives, format_window
from monitor.slo.prom import Prometheus
from monitor.slo.rules import DURATION, RUNS, bucket_bound

STEP = 60  # seconds between the differenced samples
DAY = 86400
STEP_FAILURES = "synthetic_probe_step_failures_total"
QUANTILES = (0.5, 0.95, 0.99)


def counted(metric: str, window: float, by: str) -> str:
    """PromQL: how much `metric` grew in (t - window, t], summed by `by`, without extrapolation.

    The subquery's range ends half a step short of the window so that exactly
    window/STEP points fall inside it whether the range is closed (Prometheus 2) or
    open (Prometheus 3) at its start.
    """
    delta = f"(({metric} - {metric} offset {STEP}s) >= 0 or ({metric} < {metric} offset {STEP}s))"
    return f"sum by ({by}) (sum_over_time({delta}[{int(window) - STEP // 2}s:{STEP}s]))"


@dataclass
class Day:
    start: float
    runs: float
    failures: float

    @property
    def availability(self) -> float:
        return 1 - self.failures / self.runs if self.runs else math.nan


@dataclass
class Latency:
    quantiles: dict[str, float]
    threshold: float | None = None
    objective: float | None = None
    within: float | None = None

    @property
    def met(self) -> bool | None:
        if self.objective is None or self.within is None:
            return None
        return self.within >= self.objective


@dataclass
class ProbeReport:
    target: str
    probe: str
    objective: float
    runs: float
    failures: float
    worst_day: Day | None
    failures_by_step: list[tuple[str, str, float]]
    latency: Latency

    @property
    def availability(self) -> float:
        return 1 - self.failures / self.runs if self.runs else math.nan

    @property
    def budget_consumed(self) -> float:
        return (self.failures / self.runs) / (1 - self.objective) if self.runs else math.nan

    @property
    def met(self) -> bool:
        latency_ok = self.latency.met is not False
        return bool(self.runs) and self.availability >= self.objective and latency_ok


@dataclass
class Report:
    prometheus: str
    start: float
    end: float
    window: float
    probes: list[ProbeReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.met for p in self.probes)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' estimate from cumulative (upper bound, count) pairs, +Inf last."""
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]) or ordered[-1][1] <= 0:
        return math.nan
    rank = q * ordered[-1][1]
    index = next(i for i, (_, count) in enumerate(ordered) if count >= rank)
    if index == len(ordered) - 1:
        return ordered[-2][0]
    upper, count = ordered[index]
    lower, below = (0.0, 0.0) if index == 0 else ordered[index - 1]
    if count == below:
        return upper
    return lower + (upper - lower) * (rank - below) / (count - below)


def _value(sample: Mapping[str, Any]) -> float:
    return float(sample["value"][1])


def build_report(
    prom: Prometheus,
    end: float,
    window: float,
    objectives: Mapping[str, Objectives | None],
    default: Objectives,
    buckets: Sequence[float],
) -> Report:
    """Ask Prometheus for the window ending at `end`; probes it has no data for are left out."""
    report = Report(prom.url, end - window, end, window)
    runs: dict[tuple[str, str], dict[str, float]] = {}
    for sample in prom.query(counted(RUNS, window, "target, probe, result"), end):
        m = sample["metric"]
        runs.setdefault((m.get("target", ""), m.get("probe", "")), {})[m.get("result", "")] = _value(sample)

    days: dict[tuple[str, str], dict[float, dict[str, float]]] = {}
    # whole days counted back from the end (a 36h window has one day: the last 24 hours)
    first_day = end - (max(int(window // DAY), 1) - 1) * DAY
    for series in prom.query_range(counted(RUNS, min(window, DAY), "target, probe, result"), first_day, end, DAY):
        m = series["metric"]
        per_day = days.setdefault((m.get("target", ""), m.get("probe", "")), {})
        for ts, value in series["values"]:
            per_day.setdefault(float(ts), {})[m.get("result", "")] = float(value)

    steps: dict[tuple[str, str], list[tuple[str, str, float]]] = {}
    for sample in prom.query(counted(STEP_FAILURES, window, "target, probe, step, reason") + " > 0", end):
        m = sample["metric"]
        steps.setdefault((m.get("target", ""), m.get("probe", "")), []).append(
            (m.get("step", ""), m.get("reason", ""), _value(sample))
        )

    histograms: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for sample in prom.query(counted(DURATION + "_bucket", window, "target, probe, le"), end):
        m = sample["metric"]
        histograms.setdefault((m.get("target", ""), m.get("probe", "")), []).append(
            (float(m.get("le", "nan")), _value(sample))
        )

    for (target, probe), counts in sorted(runs.items()):
        if probe in objectives and objectives[probe] is None:
            continue  # the probe opted out (`slo: {enabled: false}`)
        obj = objectives.get(probe) or default
        total = sum(counts.values())
        failures = counts.get("failure", 0.0)
        day_list = [
            Day(ts - DAY, sum(c.values()), c.get("failure", 0.0))
            for ts, c in sorted(days.get((target, probe), {}).items())
            if sum(c.values()) > 0
        ]
        worst = min(day_list, key=lambda d: (d.availability, -d.failures, d.start), default=None)
        hist = histograms.get((target, probe), [])
        latency = Latency({f"p{int(q * 100)}": histogram_quantile(q, hist) for q in QUANTILES})
        if obj.latency_threshold is not None and obj.latency_objective is not None:
            bound, _ = bucket_bound(obj.latency_threshold, buckets)
            within = dict(hist).get(bound)
            count = dict(hist).get(math.inf)
            latency.threshold, latency.objective = bound, obj.latency_objective
            latency.within = within / count if within is not None and count else None
        report.probes.append(
            ProbeReport(
                target=target,
                probe=probe,
                objective=obj.availability,
                runs=total,
                failures=failures,
                worst_day=worst,
                failures_by_step=sorted(steps.get((target, probe), []), key=lambda s: (-s[2], s[0], s[1])),
                latency=latency,
            )
        )
    return report


def window_name(seconds: float) -> str:
    return format_window(seconds)
