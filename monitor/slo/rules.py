"""`synthetic-monitor slo rules`: a Prometheus rule file from the configured objectives.

One rule group per probe (Sloth's layout): recording rules for the bad-run ratio over
the SRE workbook's windows, the objective and the budget left over the SLO window, then
the multi-window, multi-burn-rate alerts. The selectors name the probe, so a per-probe
objective needs no join, and `promtool check rules --lint-fatal` sees distinct rules
because every recording rule carries its target/probe as static labels.

Locations (fleet mode): the ratios are recorded per location (`by (target, probe,
location)`; a daemon without a location label is one location), so one failing vantage
point burns its own budget, not the whole probe's. A critical burn needs `min_locations`
locations burning (or every location that reports, when fewer report: a single daemon
pages alone, as SyntheticProbeFailing); fewer is a warning that names the location. A
location "reports" while its short window holds runs: one that stopped is no vote
(SyntheticMonitorDown covers it). Every SLI is one expression (`_SLI.ratio_expr`), and the
maintenance exclusion is one `unless` on the burning condition.

Sparse probes (docs/objectives.md): a window is stretched to hold at least
STRETCH_RUNS runs of the probe (a 5 min probe's 5m window becomes 10m, so the short
window is never empty), and a pair pages only when its long window holds at least
`min_failures` bad runs (one failed run of the 5 min write probe is 1/12 of an hour,
above the 14.4x threshold of a 99.5 % objective).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from monitor.promtypes import float_to_go
from monitor.slo.model import Objectives, format_window

RUNS = "synthetic_probe_runs_total"
DURATION = "synthetic_probe_duration_seconds"
RUNBOOK_BASE = "https://runbooks.example.internal/synthetic-monitor#"
ERROR_ALERT = "SyntheticProbeErrorBudgetBurn"
LATENCY_ALERT = "SyntheticProbeLatencyBudgetBurn"
STRETCH_RUNS = 2
WINDOWS = (300, 1800, 3600, 7200, 21600, 86400, 259200)  # 5m 30m 1h 2h 6h 1d 3d
BY = "target, probe, location"  # the SLI's grouping: one ratio per vantage point
QUORUM_BY = "target, probe"
DEFAULT_MIN_LOCATIONS = 2
# Names the location when the series has one (a single daemon without a location label has none).
FROM_LOCATION = "{{ with $labels.location }} from location {{ . }}{{ end }}"


@dataclass(frozen=True)
class BurnPair:
    """One row of the SRE workbook's table 5-8 (multiwindow, multi-burn-rate alerts)."""

    severity: str
    long: int
    short: int
    factor: float


PAIRS = (
    BurnPair("critical", 3600, 300, 14.4),
    BurnPair("critical", 21600, 1800, 6.0),
    BurnPair("warning", 86400, 7200, 3.0),
    BurnPair("warning", 259200, 21600, 1.0),
)

# Recording rule names: level:metric:operations (https://prometheus.io/docs/practices/rules/).
ERROR_RATIO = "target_probe:synthetic_probe_runs_failure_per_runs:ratio_rate"
LATENCY_RATIO = "target_probe:synthetic_probe_duration_slow_per_runs:ratio_rate"
ERROR_OBJECTIVE = "target_probe:synthetic_probe_slo_objective:ratio"
LATENCY_OBJECTIVE = "target_probe:synthetic_probe_latency_slo_objective:ratio"
ERROR_WINDOW = "target_probe:synthetic_probe_runs_failure_per_runs:ratio_window"
LATENCY_WINDOW = "target_probe:synthetic_probe_duration_slow_per_runs:ratio_window"
ERROR_BUDGET = "target_probe:synthetic_probe_error_budget_remaining:ratio"
LATENCY_BUDGET = "target_probe:synthetic_probe_latency_budget_remaining:ratio"
# Maintenance windows (synthetic_probe_maintenance == 1) leave the budget and the pages:
# runs outside any window, recorded per evaluation, feed the budget's window ratio.
MAINTENANCE = "synthetic_probe_maintenance"
OUTSIDE = "_outside_maintenance:increase"


def bucket_bound(threshold: float, buckets: Sequence[float]) -> tuple[float, str | None]:
    """The bucket bound nearest to the threshold (ties: the lower, stricter one) and a warning if moved."""
    if threshold in buckets:
        return threshold, None
    bound = min(buckets, key=lambda b: (abs(b - threshold), b))
    return bound, (
        f"latency threshold {threshold:g}s is not a bucket bound of metrics.buckets; using the nearest bound {bound:g}s"
    )


def stretched(window: int, interval: float) -> str:
    """The range a window really uses for a probe: at least STRETCH_RUNS of its intervals."""
    return format_window(max(float(window), STRETCH_RUNS * interval))


def _number(value: float) -> str:
    return f"{value:.6g}"


def _selector(obj: Objectives, **extra: str) -> str:
    labels = {"target": obj.target, "probe": obj.probe, **extra}
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


class _SLI:
    """What differs between the availability and the latency objective."""

    def __init__(self, kind: str, obj: Objectives, le: str | None = None) -> None:
        self.kind, self.obj, self.le = kind, obj, le
        if kind == "error":
            self.ratio, self.objective_name, self.window_name, self.budget_name = (
                ERROR_RATIO,
                ERROR_OBJECTIVE,
                ERROR_WINDOW,
                ERROR_BUDGET,
            )
            self.objective, self.alert = obj.availability, ERROR_ALERT
        else:
            assert obj.latency_objective is not None
            self.ratio, self.objective_name, self.window_name, self.budget_name = (
                LATENCY_RATIO,
                LATENCY_OBJECTIVE,
                LATENCY_WINDOW,
                LATENCY_BUDGET,
            )
            self.objective, self.alert = obj.latency_objective, LATENCY_ALERT

    @property
    def budget(self) -> float:
        return 1.0 - self.objective

    def ratio_expr(self, rng: str) -> str:
        """Bad runs / all runs over a range."""
        sel = _selector(self.obj)
        if self.kind == "error":
            return (
                f"sum by ({BY}) (rate({RUNS}{_selector(self.obj, result='failure')}[{rng}]))\n/\n"
                f"sum by ({BY}) (rate({RUNS}{sel}[{rng}]))\n"
            )
        fast = _selector(self.obj, le=self.le or "")
        return (
            f"1 - (\n  sum by ({BY}) (rate({DURATION}_bucket{fast}[{rng}]))\n  /\n"
            f"  sum by ({BY}) (rate({DURATION}_count{sel}[{rng}]))\n)\n"
        )

    @property
    def outside(self) -> tuple[str, str]:
        """Recording names: bad runs and all runs outside maintenance windows, per short range."""
        base = "synthetic_probe_runs_failure" if self.kind == "error" else "synthetic_probe_duration_slow"
        all_runs = "synthetic_probe_runs" if self.kind == "error" else "synthetic_probe_duration_runs"
        return f"target_probe:{base}{OUTSIDE}", f"target_probe:{all_runs}{OUTSIDE}"

    def all_runs_expr(self, rng: str) -> str:
        metric = RUNS if self.kind == "error" else f"{DURATION}_count"
        return f"sum by (target, probe) (increase({metric}{_selector(self.obj)}[{rng}]))"

    def bad_runs_expr(self, rng: str) -> str:
        """How many bad runs the range holds (the sparse-probe guard)."""
        if self.kind == "error":
            return f"sum by ({BY}) (increase({RUNS}{_selector(self.obj, result='failure')}[{rng}]))"
        return (
            f"(\n  sum by ({BY}) (increase({DURATION}_count{_selector(self.obj)}[{rng}]))\n  -\n"
            f"  sum by ({BY}) (increase({DURATION}_bucket{_selector(self.obj, le=self.le or '')}[{rng}]))\n)"
        )


def _labels(obj: Objectives, **extra: str) -> dict[str, str]:
    return {"target": obj.target, "probe": obj.probe, **extra}


def _not_in_maintenance(obj: Objectives, rng: str) -> str:
    return (
        f"unless on (target, probe) max by (target, probe) (max_over_time({MAINTENANCE}{_selector(obj)}[{rng}])) == 1"
    )


def _sli_rules(sli: _SLI, min_locations: int = DEFAULT_MIN_LOCATIONS) -> list[dict[str, Any]]:
    obj = sli.obj
    window = format_window(obj.window)
    short, short_name = stretched(WINDOWS[0], obj.interval), format_window(WINDOWS[0])
    bad_outside, all_outside = sli.outside
    rules: list[dict[str, Any]] = [
        {"record": sli.objective_name, "expr": f"vector({_number(sli.objective)})", "labels": _labels(obj)},
    ]
    for seconds in WINDOWS:
        rules.append(
            {
                "record": sli.ratio + format_window(seconds),
                "expr": sli.ratio_expr(stretched(seconds, obj.interval)),
                "labels": _labels(obj),
            }
        )
    # Sampled every evaluation, so each run is counted (range / interval) times in both
    # sums alike: the ratio is right, and a range that touched a window is left out.
    for name, expr in ((bad_outside, sli.bad_runs_expr(short)), (all_outside, sli.all_runs_expr(short))):
        rules.append(
            {
                "record": name + short_name,
                "expr": f"{expr}\n{_not_in_maintenance(obj, short)}\n",
                "labels": _labels(obj),
            }
        )
    rules.append(
        {
            "record": sli.window_name,
            "expr": (
                f"sum_over_time({bad_outside}{short_name}{_selector(obj)}[{window}])\n/\n"
                f"sum_over_time({all_outside}{short_name}{_selector(obj)}[{window}])\n"
            ),
            "labels": _labels(obj, slo_window=window),
        }
    )
    rules.append(
        {
            "record": sli.budget_name,
            "expr": f"1 - {sli.window_name}{_selector(obj)} / {_number(sli.budget)}",
            "labels": _labels(obj, slo_window=window),
        }
    )
    what = "failed runs" if sli.kind == "error" else f"runs slower than {_number(float(sli.le or 0))}s"
    share = f"{_number(sli.objective * 100)}%"
    budget = "error" if sli.kind == "error" else "latency"
    for pair in PAIRS:
        threshold = _number(pair.factor * sli.budget)
        long_name, short_name = format_window(pair.long), format_window(pair.short)
        long_rng = stretched(pair.long, obj.interval)
        # One series per location burning at this pair's rate.
        burning = (
            f"{sli.ratio}{long_name}{_selector(obj)} > {threshold}\n"
            f"and\n{sli.ratio}{short_name}{_selector(obj)} > {threshold}\n"
            f"{_not_in_maintenance(obj, stretched(pair.short, obj.interval))}\n"
            f"and\n{sli.bad_runs_expr(long_rng)} >= {obj.min_failures}\n"
        )
        rate = (
            f"above {threshold} over the last {long_name} and {short_name} ({_number(pair.factor)}x the budget "
            f"of a {share} objective over {window}; at this rate the budget lasts "
            f"{_number(obj.window / pair.factor / 86400)} days)"
        )
        runbook = RUNBOOK_BASE + sli.alert.lower()
        one_location = {
            "summary": f"{{{{ $labels.probe }}}} on {{{{ $labels.target }}}} burns its {budget} budget "
            f"{_number(pair.factor)}x too fast{FROM_LOCATION}",
            "description": (
                f"The share of {what} of probe {{{{ $labels.probe }}}} on {{{{ $labels.target }}}}{FROM_LOCATION} is {rate}."
            ),
            "runbook_url": runbook,
        }
        if pair.severity != "critical":
            rules.append(
                {
                    "alert": sli.alert,
                    "expr": burning,
                    "labels": _labels(obj, severity=pair.severity, long_window=long_name),
                    "annotations": one_location,
                }
            )
            continue
        quorum = (
            f"count by ({QUORUM_BY}) (\n{_indent(burning)})\n>= on ({QUORUM_BY})\n"
            f"clamp_max(count by ({QUORUM_BY}) ({sli.ratio}{short_name}{_selector(obj)}), {min_locations})\n"
        )
        rules.append(
            {
                "alert": sli.alert,
                "expr": quorum,
                "labels": _labels(obj, severity=pair.severity, long_window=long_name),
                "annotations": {
                    "summary": f"{{{{ $labels.probe }}}} on {{{{ $labels.target }}}} burns its "
                    f"{budget} budget {_number(pair.factor)}x too fast",
                    "description": (
                        f"The share of {what} of probe {{{{ $labels.probe }}}} on {{{{ $labels.target }}}} is {rate} "
                        f"from at least {min_locations} locations (or every location that reports)."
                    ),
                    "runbook_url": runbook,
                },
            }
        )
        # Below the quorum: a warning per burning location, naming it (that location's own path?).
        rules.append(
            {
                "alert": sli.alert,
                "expr": f"(\n{_indent(burning)})\nunless on ({QUORUM_BY})\n(\n{_indent(quorum)})\n",
                "labels": _labels(obj, severity="warning", long_window=long_name),
                "annotations": {
                    **one_location,
                    "description": one_location["description"]
                    + f" Fewer than {min_locations} locations burn: no page.",
                },
            }
        )
    return rules


def _indent(text: str) -> str:
    return "".join("  " + line + "\n" for line in text.rstrip("\n").split("\n"))


def build_rules(
    objectives: Sequence[Objectives], buckets: Sequence[float], min_locations: int = DEFAULT_MIN_LOCATIONS
) -> tuple[dict[str, Any], list[str]]:
    """The rule file as a mapping, and warnings for stderr."""
    groups: list[dict[str, Any]] = []
    warnings: list[str] = []
    for obj in objectives:
        rules = _sli_rules(_SLI("error", obj), min_locations)
        for pair in PAIRS:
            if pair.factor * obj.error_budget >= 1:
                warnings.append(
                    f"probe {obj.probe}: a {_number(obj.availability * 100)}% objective can never burn "
                    f"{_number(pair.factor)}x (that needs more than 100% failed runs); that alert never fires"
                )
        if obj.latency_threshold is not None:
            bound, warning = bucket_bound(obj.latency_threshold, buckets)
            if warning:
                warnings.append(f"probe {obj.probe}: {warning}")
            rules += _sli_rules(_SLI("latency", obj, le=float_to_go(bound)), min_locations)
        groups.append({"name": f"synthetic-monitor.slo.{obj.probe}", "rules": rules})
    return {"groups": groups}, warnings


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so the PromQL stays readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def render_rules(
    objectives: Sequence[Objectives],
    buckets: Sequence[float],
    source: str | None,
    min_locations: int = DEFAULT_MIN_LOCATIONS,
) -> tuple[str, list[str]]:
    """The rule file text (a commented header, one commented group per probe) and warnings."""
    document, warnings = build_rules(objectives, buckets, min_locations)
    command = f"synthetic-monitor slo rules --config {source}" if source else "synthetic-monitor slo rules"
    lines = [
        f"# GENERATED by `{command}`" + ("" if source else " (built-in default config)") + ". Do not edit: change the",
        "# `slo:` blocks of the config and re-run it (tests/test_slo_rules.py fails while stale).",
        "#",
        '# Multi-window, multi-burn-rate alerts (Google SRE workbook, "Alerting on SLOs"):',
        "#   critical: 14.4x over 1h and 5m, or 6x over 6h and 30m",
        "#   warning:  3x over 1d and 2h,  or 1x over 3d and 6h",
        f"# A window holds at least {STRETCH_RUNS} runs of its probe (stretched for slow probes), and",
        "# a pair fires only when its long window holds at least `min_failures` bad runs.",
        "# Per location: a critical burn needs "
        f"{min_locations} locations burning (peers.min_locations; or every location that",
        "# reports, when fewer do); fewer is a warning naming the location.",
        "groups:",
    ]
    for obj, group in zip(objectives, document["groups"]):
        notes = [
            f"probe {obj.probe} on {obj.target}: every {format_window(obj.interval)}, availability "
            f"{_number(obj.availability * 100)}% over {format_window(obj.window)}"
            + (
                f", {_number((obj.latency_objective or 0) * 100)}% of runs within "
                f"{_number(bucket_bound(obj.latency_threshold, buckets)[0])}s"
                if obj.latency_threshold is not None
                else ", no latency objective"
            ),
        ]
        moved = [
            f"{format_window(w)} -> {stretched(w, obj.interval)}"
            for w in WINDOWS
            if stretched(w, obj.interval) != format_window(w)
        ]
        if moved:
            notes.append(f"  sparse probe, windows stretched: {', '.join(moved)}")
        lines += [f"  # {note}" for note in notes]
        body = yaml.dump([group], Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
        lines += ["  " + line if line else line for line in body.splitlines()]
    return "\n".join(lines) + "\n", warnings
