"""The `check` report: the same results rendered as a table, JSON or Markdown.

With `--repeat N` every step gets mean/p50/p95 over its N runs, like the hand-made
report's "average over 10 requests" table.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from monitor.config import Config
from monitor.diagnosis import runbook_anchor
from monitor.fleet import identity
from monitor.maintenance import Maintenance
from monitor.results import Diagnosis, ProbeResult, StepResult
from monitor.sinks.history import HistorySink
from monitor.web.pages.data import PageSource, ProbeInfo
from monitor.web.pages.render import status_page


@dataclass(frozen=True)
class ProbeRuns:
    """All runs of one probe in a check, in order; `planned_steps`: what a run would do,
    so the report can list the steps a failed run never reached."""

    name: str
    target: str
    target_kind: str
    scenario: str
    runs: tuple[ProbeResult, ...]
    planned_steps: tuple[str, ...] = ()

    def not_run(self, result: ProbeResult) -> list[str]:
        """The planned steps a failed run never reached (none for a passing run)."""
        if result.ok:
            return []
        ran = {step.name for step in result.steps}
        return [step for step in self.planned_steps if step not in ran]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    @property
    def last(self) -> ProbeResult:
        return self.runs[-1]


@dataclass(frozen=True)
class TargetLine:
    """One target as the report's header shows it (the URL without credentials)."""

    name: str
    kind: str
    url: str
    version: str | None = None
    certificate_expiry: float | None = None  # Unix time (https targets)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "version": self.version,
            "tls_earliest_cert_expiry": _iso(self.certificate_expiry) if self.certificate_expiry else None,
        }

    def text(self) -> str:
        parts = [f"{self.name} ({self.kind}) {self.url}", f"version {self.version or 'unknown'}"]
        if self.certificate_expiry is not None:
            parts.append(f"certificate expires {_iso(self.certificate_expiry)}")
        return ", ".join(parts)


@dataclass(frozen=True)
class ReportHeader:
    """What a ticket needs besides the steps: where, when, against what, by which monitor."""

    monitor_version: str
    generated_at: dt.datetime
    location: str | None = None
    replica: str | None = None
    targets: tuple[TargetLine, ...] = ()
    runbook_url: str | None = None  # alerting.runbook_url: diagnosis links point there

    def as_dict(self) -> dict[str, Any]:
        return {
            "monitor_version": self.monitor_version,
            "generated_at": self.generated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "location": self.location,
            "replica": self.replica,
            "targets": [t.as_dict() for t in self.targets],
        }

    def lines(self) -> list[str]:
        where = f"location {self.location or '(not set)'}" + (f", replica {self.replica}" if self.replica else "")
        return [
            f"synthetic-monitor {self.monitor_version} check at {self.generated_at.strftime('%Y-%m-%d %H:%M:%S UTC')},"
            f" {where}",
            *[f"target {t.text()}" for t in self.targets],
        ]


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def runbook_ref(component: str, runbook_url: str | None) -> str:
    """A diagnosis's pointer: a link when `alerting.runbook_url` is set, else the docs section's name."""
    anchor = runbook_anchor(component)
    return f"runbook {runbook_url}#{anchor}" if runbook_url else f"docs section #{anchor}"


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def step_stats(probe: ProbeRuns) -> dict[str, dict[str, float]]:
    durations: dict[str, list[float]] = {}
    passed: dict[str, int] = {}
    for run in probe.runs:
        for step in run.steps:
            durations.setdefault(step.name, []).append(step.duration_seconds)
            passed[step.name] = passed.get(step.name, 0) + (1 if step.ok else 0)
    return {
        name: {
            "n": len(values),
            "passed": passed[name],
            "mean": sum(values) / len(values),
            "p50": percentile(values, 50),
            "p95": percentile(values, 95),
            "min": min(values),
            "max": max(values),
        }
        for name, values in durations.items()
    }


def to_json(probes: Sequence[ProbeRuns], header: ReportHeader | None = None) -> dict[str, Any]:
    out = []
    for probe in probes:
        last = probe.last.as_dict()
        stats = step_stats(probe)
        entry = {
            "name": probe.name,
            "target": probe.target,
            "scenario": probe.scenario,
            "ok": probe.ok,
            "duration_seconds": last["duration_seconds"],
            "runs": len(probe.runs),
            "failed_runs": sum(1 for r in probe.runs if not r.ok),
            "root_cause": last["root_cause"],
            "diagnosis": last["diagnosis"],
            "facts": last["facts"],
            "notes": last["notes"],
            "steps": [],
            "not_run": probe.not_run(probe.last),
            "failures": [
                {
                    "run": i + 1,
                    "step": s.name,
                    "reason": s.reason.value if s.reason else None,
                    "error": s.error,
                    "component": r.diagnosis.component if r.diagnosis and s is r.failed_step else s.component,
                }
                for i, r in enumerate(probe.runs)
                for s in r.steps
                if not s.ok
            ],
        }
        for step in last["steps"]:
            s = stats.get(step["name"], {})
            if len(probe.runs) > 1 and s:
                step["latency_seconds"] = {k: round(v, 6) for k, v in s.items() if k not in ("n", "passed")}
                step["runs"], step["passed"] = s["n"], s["passed"]
            entry["steps"].append(step)
        out.append(entry)
    targets = [{"name": t, "diagnosis": d.as_dict() if d else None} for t, d in target_culprits(probes).items()]
    report: dict[str, Any] = {"ok": all(p.ok for p in probes), "probes": out, "targets": targets}
    if header is not None:
        report["report"] = header.as_dict()
    return report


def target_culprits(probes: Sequence[ProbeRuns]) -> dict[str, Diagnosis | None]:
    """One culprit per target: the stamp of the target's last handled result (check runs the
    probes in order, so the last probe of a target saw every other one's latest run)."""
    out: dict[str, Diagnosis | None] = {}
    for probe in probes:
        out[probe.target] = probe.last.target_diagnosis
    return out


def _culprit_lines(probes: Sequence[ProbeRuns], header: ReportHeader | None, bullet: str = "") -> list[str]:
    url = header.runbook_url if header else None
    return [
        f"{bullet}target {t}: culprit {d.component}: {d.summary} ({runbook_ref(d.component, url)})"
        for t, d in target_culprits(probes).items()
        if d is not None
    ]


def render_json(probes: Sequence[ProbeRuns], header: ReportHeader | None = None) -> str:
    return json.dumps(to_json(probes, header), indent=2)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _phases(step: StepResult) -> str:
    """connect/tls/first byte/body in ms, one compact cell ("-" when the step sent no request)."""
    if step.phases is None:
        return "-"
    return "/".join(f"{v * 1000:.1f}" if v else "0" for v in step.phases.values())


DETAIL_WIDTH = 100  # the detail column wraps here: a hint is never cut


def render_table(probes: Sequence[ProbeRuns], header: ReportHeader | None = None) -> str:
    repeat = max((len(p.runs) for p in probes), default=1)
    rows: list[list[str]] = []
    if repeat > 1:
        columns = ["PROBE", "STEP", "PASSED", "MEAN", "P50", "P95", "LAST ERROR"]
        for probe in probes:
            stats = step_stats(probe)
            for name, s in stats.items():
                errors = [st.error for r in probe.runs for st in r.steps if st.name == name and not st.ok]
                rows.append(
                    [
                        probe.name,
                        name,
                        f"{s['passed']}/{s['n']}",
                        _ms(s["mean"]),
                        _ms(s["p50"]),
                        _ms(s["p95"]),
                        (errors[-1] or "") if errors else "",
                    ]
                )
    else:
        columns = ["PROBE", "STEP", "RESULT", "TIME", "CONN/TLS/TTFB/BODY MS", "DETAIL"]
        for probe in probes:
            for step in probe.last.steps:
                result = (
                    "skip"
                    if step.skipped
                    else ("ok" if step.ok else f"FAIL {step.reason.value if step.reason else ''}")
                )
                rows.append(
                    [probe.name, step.name, result, _ms(step.duration_seconds), _phases(step), step.error or ""]
                )
            for name in probe.not_run(probe.last):
                rows.append([probe.name, name, "not run", "-", "-", "an earlier step failed"])
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns) - 1)]
    lines = [*header.lines(), ""] if header is not None else []
    for row in [columns, *rows]:
        detail = textwrap.wrap(row[-1], DETAIL_WIDTH, break_long_words=False, break_on_hyphens=False) or [""]
        cells = [cell.ljust(w) for cell, w in zip(row, widths)]
        lines.append("  ".join([*cells, detail[0]]).rstrip())
        indent = " " * (sum(widths) + 2 * len(widths))
        lines.extend(indent + more for more in detail[1:])
    passed = sum(1 for p in probes if p.ok)
    lines.append("")
    lines.append(f"{passed}/{len(probes)} probes passed" + (f" over {repeat} runs each" if repeat > 1 else ""))
    for probe in probes:
        if probe.last.root_cause or probe.last.notes:
            lines.append(
                f"{probe.name}: "
                + "; ".join(
                    [*probe.last.notes] + ([f"root cause: {probe.last.root_cause}"] if probe.last.root_cause else [])
                )
            )
        if probe.last.diagnosis is not None:
            lines.append(f"{probe.name}: diagnosis {_diagnosis_line(probe.last, header)}")
    lines += _culprit_lines(probes, header)
    return "\n".join(lines)


def _diagnosis_line(result: ProbeResult, header: ReportHeader | None) -> str:
    d = result.diagnosis
    assert d is not None
    return f"{d.component}: {d.summary} ({runbook_ref(d.component, header.runbook_url if header else None)})"


def render_markdown(
    probes: Sequence[ProbeRuns], header: ReportHeader | None = None, now: dt.datetime | None = None
) -> str:
    now = now or (header.generated_at if header is not None else dt.datetime.now(dt.UTC))
    repeat = max((len(p.runs) for p in probes), default=1)
    lines = [
        "# Synthetic monitor report",
        "",
        f"Generated {now.strftime('%Y-%m-%d %H:%M:%S UTC')} by `synthetic-monitor check`"
        + (f", {repeat} runs per probe." if repeat > 1 else "."),
        "",
        *(
            [
                f"Monitor version {header.monitor_version}, location {header.location or '(not set)'}"
                + (f", replica {header.replica}" if header.replica else "")
                + ".",
                "",
                "| Target | Kind | URL | Server version |",
                "|---|---|---|---|",
                *[f"| {t.name} | {t.kind} | {t.url} | {t.version or 'unknown'} |" for t in header.targets],
                "",
            ]
            if header is not None
            else []
        ),
        "## Summary",
        "",
        "| Category | Tests | Passed | Failed |",
        "|---|---:|---:|---:|",
    ]
    categories: dict[str, list[int]] = {}
    for probe in probes:
        counts = categories.setdefault(f"{probe.target_kind.capitalize()} ({probe.target})", [0, 0])
        for run in probe.runs:
            for step in run.steps:
                counts[0] += 1
                counts[1] += 1 if step.ok else 0
    total_tests = total_passed = 0
    for category, (tests, passed) in categories.items():
        lines.append(f"| {category} | {tests} | {passed} | {tests - passed} |")
        total_tests += tests
        total_passed += passed
    lines.append(f"| **Total** | **{total_tests}** | **{total_passed}** | **{total_tests - total_passed}** |")
    lines += ["", "## Endpoints", ""]
    for probe in probes:
        lines += [
            f"### {probe.name} ({probe.scenario} on {probe.target})",
            "",
            "| Step | Method | Endpoint | Status | Response time | Connect / TLS / first byte / body (ms) | Result |",
            "|---|---|---|---:|---:|---:|---|",
        ]
        for step in probe.last.steps:
            result = (
                "SKIPPED"
                if step.skipped
                else ("PASS" if step.ok else f"FAIL ({step.reason.value if step.reason else ''})")
            )
            lines.append(
                f"| {step.name} | {step.method or '-'} | `{step.path or '-'}` | {step.status_code or '-'} | "
                f"{_ms(step.duration_seconds)} | {_phases(step)} | {result} |"
            )
        for name in probe.not_run(probe.last):
            lines.append(f"| {name} | - | - | - | - | - | NOT RUN |")
        failures = [(i + 1, s) for i, r in enumerate(probe.runs) for s in r.steps if not s.ok]
        if failures:
            lines += ["", "Failures:", ""]
            for run_no, step in failures[-10:]:
                lines.append(f"- run {run_no}, `{step.name}`: {step.reason.value if step.reason else ''}: {step.error}")
        if probe.last.root_cause or probe.last.notes:
            lines += ["", *[f"> {note}" for note in probe.last.notes]]
        if probe.last.diagnosis is not None:
            lines += [
                "",
                f"**Diagnosis:** `{probe.last.diagnosis.component}`: {probe.last.diagnosis.summary}"
                f" ({runbook_ref(probe.last.diagnosis.component, header.runbook_url if header else None)})",
            ]
        lines.append("")
    title = f"## Response times (average over {repeat} requests)" if repeat > 1 else "## Response times"
    lines += [title, "", "| Probe | Step | Mean | p50 | p95 | Min | Max |", "|---|---|---:|---:|---:|---:|---:|"]
    for probe in probes:
        for name, s in step_stats(probe).items():
            lines.append(
                f"| {probe.name} | {name} | {_ms(s['mean'])} | {_ms(s['p50'])} | {_ms(s['p95'])} | "
                f"{_ms(s['min'])} | {_ms(s['max'])} |"
            )
    verdict = "All probes passed." if all(p.ok for p in probes) else "Some probes FAILED."
    lines += ["", f"**{verdict}**", ""]
    culprits = _culprit_lines(probes, header, "- ")
    if culprits:
        lines += ["## One culprit per target", "", *culprits, ""]
    return "\n".join(lines)


RENDERERS = {"table": render_table, "json": render_json, "markdown": render_markdown}


def render_html(probes: Sequence[ProbeRuns], config: Config) -> str:
    """The daemon's status page for a one-off run (a report to attach to a ticket): the
    same renderer, fed from a history that holds this check's runs."""
    history = HistorySink(keep=max((len(p.runs) for p in probes), default=1))
    for probe in probes:
        for run in probe.runs:
            history.handle(run)
    maintenance = Maintenance()
    maintenance.configure(config.maintenance, {p.name for p in config.probes}, {t.name for t in config.targets})
    source = PageSource(
        history=history,
        probes=lambda: [ProbeInfo(p.name, p.target, p.scenario) for p in probes],
        maintenance=maintenance,
        identity=lambda: identity(config),
        refresh_seconds=None,
    )
    return status_page(replace(source.page(), title="synthetic-monitor check"), link_probes=False)
