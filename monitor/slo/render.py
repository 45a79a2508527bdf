"""The SLO report as a table, Markdown (shaped like the hand-made report) or JSON."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from monitor.slo.model import format_window
from monitor.slo.report import Day, ProbeReport, Report


def _pct(ratio: float | None, digits: int = 3) -> str:
    if ratio is None or math.isnan(ratio):
        return "-"
    return f"{ratio * 100:.{digits}f}%"


def _objective(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def _when(ts: float) -> str:
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.strftime("%Y-%m-%d" if moment.time() == dt.time(0) else "%Y-%m-%d %H:%M")


def _stamp(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _day(day: Day | None) -> str:
    if day is None:
        return "-"
    return f"{_when(day.start)} ({_pct(day.availability, 2)}, {day.failures:.0f} failed)"


def _verdict(probe: ProbeReport) -> str:
    return "met" if probe.met else "MISSED"


def _count(value: float) -> str:
    return f"{value:.0f}"


def to_json(report: Report) -> dict[str, Any]:
    def num(value: float | None) -> float | None:
        return None if value is None or math.isnan(value) else value

    return {
        "ok": report.ok,
        "prometheus": report.prometheus,
        "window": format_window(report.window),
        "start": dt.datetime.fromtimestamp(report.start, dt.UTC).isoformat(),
        "end": dt.datetime.fromtimestamp(report.end, dt.UTC).isoformat(),
        "probes": [
            {
                "target": p.target,
                "probe": p.probe,
                "met": p.met,
                "runs": p.runs,
                "failures": p.failures,
                "availability": num(p.availability),
                "objective": p.objective,
                "budget_consumed": num(p.budget_consumed),
                "worst_day": None
                if p.worst_day is None
                else {
                    "start": dt.datetime.fromtimestamp(p.worst_day.start, dt.UTC).isoformat(),
                    "runs": p.worst_day.runs,
                    "failures": p.worst_day.failures,
                    "availability": num(p.worst_day.availability),
                },
                "failures_by_step": [{"step": s, "reason": r, "count": c} for s, r, c in p.failures_by_step],
                "latency": {
                    **{k: num(v) for k, v in p.latency.quantiles.items()},
                    "threshold": p.latency.threshold,
                    "objective": p.latency.objective,
                    "within": num(p.latency.within),
                    "met": p.latency.met,
                },
            }
            for p in report.probes
        ],
    }


def render_json(report: Report) -> str:
    return json.dumps(to_json(report), indent=2)


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def render_table(report: Report) -> str:
    lines = [f"SLO report {_stamp(report.start)} .. {_stamp(report.end)} UTC ({format_window(report.window)})", ""]
    lines += _grid(
        ["PROBE", "TARGET", "RUNS", "FAILED", "AVAILABILITY", "OBJECTIVE", "BUDGET USED", "WORST DAY", "P95", "RESULT"],
        [
            [
                p.probe,
                p.target,
                _count(p.runs),
                _count(p.failures),
                _pct(p.availability),
                _objective(p.objective),
                _pct(p.budget_consumed, 1),
                _day(p.worst_day),
                _ms(p.latency.quantiles["p95"]),
                _verdict(p),
            ]
            for p in report.probes
        ],
    )
    failures = [[p.probe, s, r, _count(c)] for p in report.probes for s, r, c in p.failures_by_step]
    if failures:
        lines += ["", *_grid(["PROBE", "STEP", "REASON", "COUNT"], failures)]
    lines += [
        "",
        *_grid(
            ["PROBE", "P50", "P95", "P99", "WITHIN THRESHOLD", "LATENCY OBJECTIVE"],
            [
                [
                    p.probe,
                    *(_ms(p.latency.quantiles[k]) for k in ("p50", "p95", "p99")),
                    _latency_within(p),
                    _latency_objective(p),
                ]
                for p in report.probes
            ],
        ),
    ]
    met = sum(1 for p in report.probes if p.met)
    lines += ["", f"{met}/{len(report.probes)} probes met their objectives"]
    return "\n".join(lines)


def _latency_within(p: ProbeReport) -> str:
    if p.latency.threshold is None:
        return "-"
    return f"{_pct(p.latency.within, 2)} <= {p.latency.threshold:g}s"


def _latency_objective(p: ProbeReport) -> str:
    if p.latency.objective is None:
        return "-"
    return f"{_objective(p.latency.objective)} ({'met' if p.latency.met else 'MISSED'})"


def render_markdown(report: Report) -> str:
    window = format_window(report.window)
    lines = [
        "# Service level report",
        "",
        f"Window: {_stamp(report.start)} to {_stamp(report.end)} UTC ({window}), from `{report.prometheus}`,"
        " by `synthetic-monitor slo report`.",
        "",
        "## Summary",
        "",
        "| Probe | Target | Runs | Failed | Availability | Objective | Error budget used | Worst day | p95 | Result |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for p in report.probes:
        lines.append(
            f"| {p.probe} | {p.target} | {_count(p.runs)} | {_count(p.failures)} | {_pct(p.availability)} | "
            f"{_objective(p.objective)} | {_pct(p.budget_consumed, 1)} | {_day(p.worst_day)} | "
            f"{_ms(p.latency.quantiles['p95'])} | {'met' if p.met else '**MISSED**'} |"
        )
    lines += ["", "## Failures by step", ""]
    failures = [(p, s, r, c) for p in report.probes for s, r, c in p.failures_by_step]
    if failures:
        lines += ["| Probe | Step | Reason | Count |", "|---|---|---|---:|"]
        lines += [f"| {p.probe} | {s} | `{r}` | {_count(c)} |" for p, s, r, c in failures]
    else:
        lines.append("No failed step in the window.")
    lines += [
        "",
        "## Latency",
        "",
        "| Probe | p50 | p95 | p99 | Within threshold | Objective |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for p in report.probes:
        lines.append(
            f"| {p.probe} | {_ms(p.latency.quantiles['p50'])} | {_ms(p.latency.quantiles['p95'])} | "
            f"{_ms(p.latency.quantiles['p99'])} | {_latency_within(p)} | {_latency_objective(p)} |"
        )
    verdict = "Every objective was met." if report.ok else "Some objectives were MISSED."
    lines += ["", f"**{verdict}**", ""]
    return "\n".join(lines)


RENDERERS = {"table": render_table, "markdown": render_markdown, "json": render_json}
