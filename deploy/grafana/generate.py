#!/usr/bin/env python3
"""The Grafana dashboard as code: writes dashboard.json and dashboard-configmap.yaml.

    python deploy/grafana/generate.py           # (re)write both files
    python deploy/grafana/generate.py --check   # exit 1 if either committed file is stale

Built with grafana-foundation-sdk (the `dashboards` extra, pinned in deploy/constraints.txt;
never a runtime dependency). Why code instead of hand-written JSON: one helper per panel
shape keeps ~60 panels consistent, and every PromQL selector goes through `sel()`, which
adds the dashboard's filters, so no query can forget the `cluster` variable.

Variables: `datasource`, `cluster` (kube-prometheus-stack's external label, present when
several clusters' series meet in one query layer such as Thanos or Mimir; the "All" value
`.*` also matches series without the label, one Prometheus per cluster), `target`, `probe`
and `location` (the fleet's scrape-time target label). tests/test_dashboard.py fails while
the committed files differ from a fresh rendering; tests/test_deploy.py checks every query
with promtool and against the metric names a running daemon exports and the recording rules.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "dashboard.json"
CONFIGMAP = HERE / "dashboard-configmap.yaml"
KEY = "synthetic-monitor.json"
UID = "synthetic-monitor"

DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
CLUSTER = 'cluster=~"$cluster"'
# The dashboard's filters by name, in the order they appear in a selector.
FILTERS = {"t": 'target=~"$target"', "p": 'probe=~"$probe"', "l": 'location=~"$location"'}
ALERT_NAMES = 'alertname=~"Synthetic.*|MLflow.*|Asgard.*"'


def sel(metric: str, *matchers: str, f: str = "tp") -> str:
    """`metric{matchers, the filters named by f, cluster}`: every selector honours `$cluster`."""
    parts = [*matchers, *(FILTERS[c] for c in f), CLUSTER]
    return f"{metric}{{{', '.join(parts)}}}"


def ratio(num: str, den: str) -> str:
    return f"{num}\n/\n{den}"


# ------------------------------------------------------------------------------ building blocks


def query(expr: str, legend: str, ref: str = "A", *, instant: bool = False, fmt: str | None = None) -> Any:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)
    q = q.editor_mode(pm.QueryEditorMode.CODE)
    q = q.instant() if instant else q.range()
    if fmt == "table":
        q = q.format(pm.PromQueryFormat.TABLE)
    elif fmt == "heatmap":
        q = q.format(pm.PromQueryFormat.HEATMAP)
    return q


def thresholds(*steps: tuple[str, float | None]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(color=color, value=value) for color, value in steps])
    )


RED_GREEN = (("red", None), ("green", 1))


def updown(down: str, up: str) -> list[dm.ValueMapping]:
    return [
        dm.ValueMap(
            options={
                "0": dm.ValueMappingResult(text=down, color="red", index=0),
                "1": dm.ValueMappingResult(text=up, color="green", index=1),
            }
        )
    ]


def marked(zero: tuple[str, str], one: tuple[str, str]) -> list[dm.ValueMapping]:
    """A 0/1 series as two named states: (text, color) for 0 and for 1."""
    return [
        dm.ValueMap(
            options={
                "0": dm.ValueMappingResult(text=zero[0], color=zero[1], index=0),
                "1": dm.ValueMappingResult(text=one[0], color=one[1], index=1),
            }
        )
    ]


# Every panel builder of the SDK: each setter returns the builder itself.
P = TypeVar("P", stat.Panel, timeseries.Panel, statetimeline.Panel, table.Panel, heatmap.Panel)


def _common(panel: P, pid: int, title: str, description: str, h: int, w: int) -> P:
    return panel.id(pid).title(title).description(description).datasource(DS).height(h).span(w)


def stat_panel(
    pid: int,
    title: str,
    description: str,
    h: int,
    w: int,
    targets: Sequence[Any],
    *,
    unit: str | None = None,
    decimals: int | None = None,
    min_max: tuple[float, float] | None = None,
    steps: Sequence[tuple[str, float | None]] | None = None,
    mappings: list[dm.ValueMapping] | None = None,
    color_mode: cm.BigValueColorMode = cm.BigValueColorMode.BACKGROUND,
    graph_mode: cm.BigValueGraphMode = cm.BigValueGraphMode.NONE,
    text_mode: cm.BigValueTextMode = cm.BigValueTextMode.AUTO,
    fixed_color: str | None = None,
) -> stat.Panel:
    panel = _common(stat.Panel(), pid, title, description, h, w).targets(list(targets))
    if unit:
        panel = panel.unit(unit)
    if decimals is not None:
        panel = panel.decimals(decimals)
    if min_max:
        panel = panel.min(min_max[0]).max(min_max[1])
    if mappings:
        panel = panel.mappings(mappings)
    if steps:
        panel = panel.thresholds(thresholds(*steps))
    if fixed_color:
        panel = panel.color_scheme(db.FieldColor().mode(dm.FieldColorModeId.FIXED).fixed_color(fixed_color))
    return (
        panel.reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(color_mode)
        .graph_mode(graph_mode)
        .justify_mode(cm.BigValueJustifyMode.AUTO)
        .orientation(cm.VizOrientation.AUTO)
        .text_mode(text_mode)
    )


def timeseries_panel(
    pid: int,
    title: str,
    description: str,
    h: int,
    w: int,
    targets: Sequence[Any],
    *,
    unit: str = "short",
    bars: bool = False,
    max_value: float | None = None,
    legend_table: bool = True,
    legend_calcs: Sequence[str] = ("lastNotNull", "max"),
    interval: str | None = None,
    stacking: bool = True,
) -> timeseries.Panel:
    panel = (
        _common(timeseries.Panel(), pid, title, description, h, w)
        .targets(list(targets))
        .unit(unit)
        .min(0)
        .draw_style(cm.GraphDrawStyle.BARS if bars else cm.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(80 if bars else 10)
        .show_points(cm.VisibilityMode.NEVER)
        .span_nulls(False)
    )
    if stacking:
        mode = cm.StackingMode.NORMAL if bars else cm.StackingMode.NONE
        panel = panel.stacking(cb.StackingConfig().mode(mode).group("A"))
    if max_value is not None:
        panel = panel.max(max_value)
    if interval:
        panel = panel.interval(interval)
    legend = cb.VizLegendOptions().show_legend(True)
    if legend_table:
        legend = legend.display_mode(cm.LegendDisplayMode.TABLE).placement(cm.LegendPlacement.RIGHT)
        legend = legend.calcs(list(legend_calcs))
    else:
        legend = legend.display_mode(cm.LegendDisplayMode.LIST).placement(cm.LegendPlacement.BOTTOM)
    tooltip = cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)
    return panel.legend(legend).tooltip(tooltip)


def timeline_panel(
    pid: int, title: str, description: str, h: int, w: int, target: Any, mappings: list[dm.ValueMapping]
) -> statetimeline.Panel:
    return (
        _common(statetimeline.Panel(), pid, title, description, h, w)
        .with_target(target)
        .mappings(mappings)
        .thresholds(thresholds(*RED_GREEN))
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .show_value(cm.VisibilityMode.NEVER)
        .merge_values(True)
        .align_value(cm.TimelineValueAlignment.LEFT)
        .row_height(0.8)
        .legend(cb.VizLegendOptions().show_legend(False))
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.SINGLE))
    )


def hidden(*names: str) -> list[Any]:
    return [
        db.DashboardFieldConfigSourceOverrides()
        .matcher(dm.MatcherConfig(id_val="byName", options=name))
        .properties([dm.DynamicConfigValue(id_val="custom.hidden", value=True)])
        for name in names
    ]


def table_panel(
    pid: int, title: str, description: str, h: int, w: int, target: Any, overrides: list[Any]
) -> table.Panel:
    return (
        _common(table.Panel(), pid, title, description, h, w).with_target(target).overrides(overrides).show_header(True)
    )


def value_query_variable(name: str, label: str, query_text: str) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query({"query": query_text, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .regex("")
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .options([])
        .hide(dm.VariableHide.DONT_HIDE)
    )


# ------------------------------------------------------------------------------------ rows


def probe_success_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Probe success and availability").id(1))
    runs_ok = sel("synthetic_probe_runs_total", 'result="success"')
    runs = sel("synthetic_probe_runs_total")
    by = "sum by (target, probe)"
    d.with_panel(
        stat_panel(
            2, "Last run", "Result of each probe's last run (synthetic_probe_success).", 5, 8,
            [query(sel("synthetic_probe_success"), "{{target}} / {{probe}}", instant=True)],
            mappings=updown("FAIL", "PASS"), steps=RED_GREEN,
        )
    )  # fmt: skip
    d.with_panel(
        stat_panel(
            3, "Availability over the dashboard range", "Successful runs / all runs over the selected time range.", 5, 8,
            [query(ratio(f"{by} (increase({runs_ok}[$__range]))", f"{by} (increase({runs}[$__range]))"),
                   "{{target}} / {{probe}}", instant=True)],
            unit="percentunit", decimals=2, min_max=(0, 1), steps=(("red", None), ("orange", 0.95), ("green", 0.99)),
        )
    )  # fmt: skip
    d.with_panel(
        stat_panel(
            4, "Time since last success",
            "Age of each probe's last passing run (synthetic_probe_last_success_timestamp_seconds).", 5, 8,
            [query(f"time() - ({sel('synthetic_probe_last_success_timestamp_seconds')} > 0)",
                   "{{target}} / {{probe}}", instant=True)],
            unit="s", steps=(("green", None), ("orange", 120), ("red", 600)),
        )
    )  # fmt: skip
    d.with_panel(
        timeline_panel(
            5, "Run result over time", "Last-run result per probe over time: green passed, red failed.", 6, 24,
            query(sel("synthetic_probe_success"), "{{target}} / {{probe}}"), updown("FAIL", "PASS"),
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            6, "Availability (1h sliding window)",
            "Successful runs / all runs over the last hour at each point (a 1h window so the 5-minute write probe has runs in it).",
            8, 12,
            [query(ratio(f"{by} (rate({runs_ok}[1h]))", f"{by} (rate({runs}[1h]))"), "{{target}} / {{probe}}")],
            unit="percentunit", max_value=1,
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            7, "Runs by result", "Finished probe runs per interval, by result.", 8, 12,
            [query(f"sum by (target, probe, result) (increase({runs}[$__rate_interval]))", "{{probe}} {{result}}")],
            bars=True,
        ).override_by_regexp(
            ".*failure", [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"})]
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            8, "Consecutive failures", "Failed runs in a row; SyntheticProbeFailing fires at 2 (for 1m).", 7, 12,
            [query(sel("synthetic_probe_consecutive_failures"), "{{target}} / {{probe}}")],
        )
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
        .thresholds(thresholds(("green", None), ("red", 2)))
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            9, "Probe run duration p95 vs deadline",
            "Whole-run duration (p95) and the configured deadline (synthetic_probe_timeout_seconds).", 7, 12,
            [
                query("histogram_quantile(0.95, sum by (target, probe, le) "
                      f"(rate({sel('synthetic_probe_duration_seconds_bucket')}[$__rate_interval])))",
                      "p95 {{target}} / {{probe}}"),
                query(f"max by (target, probe) ({sel('synthetic_probe_timeout_seconds')})",
                      "deadline {{target}} / {{probe}}", "B"),
            ],
            unit="s", interval="1m",
        ).override_by_regexp(
            "deadline.*",
            [
                dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
                dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
            ],
        )
    )  # fmt: skip
    d.with_panel(
        timeline_panel(
            108, "Maintenance windows",
            "1 while a maintenance window covers the probe (synthetic_probe_maintenance): read a gap in the "
            "availability panels against it. Failures inside a window page no one and spend no error budget.", 5, 24,
            query(f"max by (target, probe) ({sel('synthetic_probe_maintenance')})", "{{target}} / {{probe}}"),
            marked(("open", "green"), ("maintenance", "blue")),
        )
    )  # fmt: skip


def step_latency_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Step latency").id(10))
    bucket = sel("synthetic_probe_step_duration_seconds_bucket")
    for pid, (q, name) in zip((11, 12, 13), (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))):
        d.with_panel(
            timeseries_panel(
                pid, f"Step latency {name}",
                f"{name} of each scenario step's duration (synthetic_probe_step_duration_seconds), pass or fail. "
                "SyntheticProbeLatencyHigh is about whole runs, not steps: it fires when most runs of a probe take "
                "longer than 5s. The write probe runs every 5 minutes: widen the range to see it.",
                9, 8,
                [query(f"histogram_quantile({q}, sum by (target, probe, step, le) (rate({bucket}[$__rate_interval])))",
                       "{{probe}} / {{step}}")],
                unit="s", legend_table=False, interval="1m",
            )
        )  # fmt: skip
    d.with_panel(
        _common(
            heatmap.Panel(), 14, "Step duration distribution",
            "All selected steps' durations from the histogram buckets (count of steps per bucket and interval).", 9, 24,
        )
        .with_target(query(f"sum by (le) (increase({bucket}[$__rate_interval]))", "{{le}}", fmt="heatmap"))
        .interval("1m")
        .calculate(False)
        .cell_gap(1)
        .color(
            heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME).scheme("Oranges").steps(64)
            .exponent(0.5).fill("dark-orange").reverse(False)
        )
        .y_axis(heatmap.YAxisConfig().axis_placement(cm.AxisPlacement.LEFT).unit("s"))
        .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.AUTO))
        .mode(cm.TooltipDisplayMode.SINGLE)
        .show_y_histogram()
        .show_color_scale(True)
        .show_legend()
        .filter_values(heatmap.FilterValueRange().le(1e-09))
        .cell_values(heatmap.CellValues().unit("short"))
    )  # fmt: skip


def failures_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Failures by reason and step").id(15))
    failures = sel("synthetic_probe_step_failures_total")
    d.with_panel(
        timeseries_panel(
            16, "Step failures by reason",
            "Failed steps per interval by reason (a fixed set: timeout, unreachable, tls_error, worker_failure, "
            "http_error, invalid_response, validation_failed, dependency_unavailable, internal_error).", 8, 12,
            [query(f"sum by (reason) (increase({failures}[$__rate_interval])) > 0", "{{reason}}")], bars=True,
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            17, "Step failures by step", "Failed steps per interval by probe and step.", 8, 12,
            [query(f"sum by (target, probe, step) (increase({failures}[$__rate_interval])) > 0", "{{probe}} / {{step}}")],
            bars=True,
        )
    )  # fmt: skip
    d.with_panel(
        table_panel(
            18, "Failures in the dashboard range",
            "Failed steps over the selected range by target, probe, step and reason. Error texts are on the monitor's /status page.",
            8, 24,
            query(f"sum by (target, probe, step, reason) (increase({failures}[$__range])) > 0", "", instant=True, fmt="table"),
            [
                *hidden("Time"),
                db.DashboardFieldConfigSourceOverrides()
                .matcher(dm.MatcherConfig(id_val="byName", options="Value"))
                .properties([dm.DynamicConfigValue(id_val="displayName", value="failures"),
                             dm.DynamicConfigValue(id_val="decimals", value=0)]),
            ],
        )
        .unit("short")
        .sort_by([cb.TableSortByFieldState().display_name("Value").desc(True)])
    )  # fmt: skip
    d.with_panel(
        table_panel(
            109, "Failing assertions (last 1h)",
            "Assertions of config-defined checks (kind http) that were false or could not be evaluated in the last "
            "hour, by step and assertion name (synthetic_probe_assertion_failures_total). The expression itself is "
            "never exported: see the check's config.",
            7, 24,
            query("sum by (target, probe, step, assertion) "
                  f"(increase({sel('synthetic_probe_assertion_failures_total')}[1h])) > 0", "", instant=True, fmt="table"),
            [
                *hidden("Time"),
                db.DashboardFieldConfigSourceOverrides()
                .matcher(dm.MatcherConfig(id_val="byName", options="Value"))
                .properties([dm.DynamicConfigValue(id_val="displayName", value="failures"),
                             dm.DynamicConfigValue(id_val="decimals", value=0)]),
            ],
        )
    )  # fmt: skip


def timeouts_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Timeouts and worker failures").id(19))
    for (count_id, series_id), reason, label, color, count_desc, series_desc, legend in (
        (
            (20, 21),
            "timeout",
            "Timeouts",
            "orange",
            "Steps that hit their deadline over the selected range.",
            "Steps that hit their deadline (reason=timeout); SyntheticProbeTimeout fires on any in 5m.",
            "{{probe}} / {{step}}",
        ),
        (
            (22, 23),
            "worker_failure",
            "Worker failures",
            "red",
            "Connections closed/reset without a response or HTTP 502/503/504 over the selected range.",
            "reason=worker_failure: what a gunicorn worker killed on its timeout, or a dead upstream, looks like "
            "from outside. MLflowWorkerFailure fires on any in 5m.",
            "{{target}} {{probe}} / {{step}}",
        ),
    ):
        failures = sel("synthetic_probe_step_failures_total", f'reason="{reason}"')
        d.with_panel(
            stat_panel(
                count_id, f"{label} in range", count_desc, 8, 6,
                [query(f"sum(increase({failures}[$__range])) or vector(0)", label.lower(), instant=True)],
                unit="short", decimals=0, steps=(("green", None), (color, 1)),
            )
        )  # fmt: skip
        d.with_panel(
            timeseries_panel(
                series_id, f"{label} by step", series_desc, 8, 18,
                [query(f"sum by (target, probe, step) (increase({failures}[$__rate_interval])) > 0", legend)],
                bars=True,
            )
        )  # fmt: skip
    d.with_panel(
        timeline_panel(
            44, "MLflow dependencies: backend store, artifact store",
            "synthetic_mlflow_dependency_up: 1/0 as the latest probe run that reached the store saw it (absent while "
            "unknown). 0 with reason dependency_unavailable means the database or the S3 artifact store is the broken "
            "part, not the MLflow workers (alert MLflowDependencyUnavailable).", 6, 24,
            query(sel("synthetic_mlflow_dependency_up", f="t"), "{{target}} {{dependency}}"), updown("DOWN", "UP"),
        )
    )  # fmt: skip


def targets_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Targets: culprit, versions, certificates").id(110))
    d.with_panel(
        timeline_panel(
            111, "Culprit now",
            "The one part blamed for each target's incident (synthetic_target_diagnosis), over the latest run of "
            "every probe of the target; empty while the target is healthy. The runbook has a section per component.",
            6, 24,
            query(f"max by (target, component) ({sel('synthetic_target_diagnosis', f='t')})", "{{target}}: {{component}}"),
            marked(("", "transparent"), ("blamed", "red")),
        )
    )  # fmt: skip
    d.with_panel(
        table_panel(
            112, "Server versions",
            "Versions each target answered (synthetic_target_info); more than one row per target is a rolling "
            "upgrade stuck half-way (MLflowVersionSkew).", 7, 12,
            query(f"count by (target, version) ({sel('synthetic_target_info', f='t')})", "", instant=True, fmt="table"),
            [
                *hidden("Time"),
                db.DashboardFieldConfigSourceOverrides()
                .matcher(dm.MatcherConfig(id_val="byName", options="Value"))
                .properties([dm.DynamicConfigValue(id_val="displayName", value="series")]),
            ],
        )
    )  # fmt: skip
    d.with_panel(
        stat_panel(
            113, "Certificate expiry (days)",
            "Days until the earliest certificate expiry an https target presented to the probe "
            "(synthetic_target_tls_earliest_cert_expiry_seconds); SyntheticTargetCertificateExpiring warns under 14 "
            "days, pages under 3. On Python < 3.13 only the leaf is read.", 7, 12,
            [query(f"min by (target) ({sel('synthetic_target_tls_earliest_cert_expiry_seconds', f='t')} - time()) / 86400",
                   "{{target}}", instant=True)],
            unit="d", decimals=1, steps=(("red", None), ("orange", 3), ("green", 14)),
        )
    )  # fmt: skip


def mlflow_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("MLflow tracing and artifact store").id(114))
    d.with_panel(
        timeseries_panel(
            115, "Trace visible p95",
            "Time from sending a trace until a search finds it (synthetic_mlflow_trace_visible_seconds), "
            "mlflow_tracing probes only (opt-in).", 8, 12,
            [query("histogram_quantile(0.95, sum by (le, target) "
                   f"(rate({sel('synthetic_mlflow_trace_visible_seconds_bucket')}[30m])))", "{{target}}")],
            unit="s", legend_table=False, stacking=False,
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            116, "Artifact throughput p50",
            "Bytes per second through the artifact store, upload and download (synthetic_mlflow_artifact_throughput_bytes; "
            "mlflow_write with artifact_size). A slow, not failed, S3 shows here first.", 8, 12,
            [query("histogram_quantile(0.5, sum by (le, target, direction) "
                   f"(rate({sel('synthetic_mlflow_artifact_throughput_bytes_bucket')}[30m]))) / 1048576",
                   "{{target}} {{direction}}")],
            unit="MiBs", legend_table=False, stacking=False,
        )
    )  # fmt: skip


def asgard_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Asgard dependencies and inventory").id(24))
    deps = sel("synthetic_asgard_dependency_up", f="t")
    inventory = sel("synthetic_asgard_inventory", f="t")
    d.with_panel(
        stat_panel(
            25, "Asgard dependencies",
            "Asgard's own view of its dependencies from GET /mlops/status (mlflow_available, feast_available).", 6, 8,
            [query(deps, "{{target}} {{dependency}}", instant=True)], mappings=updown("DOWN", "UP"), steps=RED_GREEN,
        )
    )  # fmt: skip
    d.with_panel(
        stat_panel(
            26, "Asgard inventory", "Counts Asgard reports: registered models, active experiments, feature views.", 6, 16,
            [query(inventory, "{{target}} {{kind}}", instant=True)], unit="short", decimals=0,
            color_mode=cm.BigValueColorMode.VALUE, graph_mode=cm.BigValueGraphMode.AREA, fixed_color="blue",
        )
    )  # fmt: skip
    d.with_panel(
        timeline_panel(
            27, "Asgard dependencies over time", "AsgardDependencyUnavailable fires when a dependency is down for 1m.", 7, 12,
            query(deps, "{{target}} {{dependency}}"), updown("DOWN", "UP"),
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            28, "Asgard inventory over time", "", 7, 12, [query(inventory, "{{target}} {{kind}}")], legend_table=False
        )
    )


def monitor_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Monitor health").id(29))
    d.with_panel(
        stat_panel(
            30, "Heartbeat age",
            "Seconds since the scheduler loop last proved alive; SyntheticMonitorStalled fires above 60s.", 6, 6,
            [query(f"time() - {sel('synthetic_monitor_heartbeat_timestamp_seconds', f='')}", "{{instance}}", instant=True)],
            unit="s", decimals=0, steps=(("green", None), ("orange", 30), ("red", 60)),
        )
    )  # fmt: skip
    d.with_panel(
        stat_panel(
            31, "Scrape up", "Prometheus can scrape the monitor (SyntheticMonitorDown fires when not).", 6, 6,
            [query(sel("up", 'job="synthetic-monitor"', f=""), "{{instance}}", instant=True)],
            mappings=updown("DOWN", "UP"), steps=RED_GREEN,
        )
    )  # fmt: skip
    d.with_panel(
        stat_panel(
            32, "Config last (re)load", "0 when the last reload was rejected (the previous config keeps running).", 6, 6,
            [query(sel("synthetic_monitor_config_last_reload_successful", f=""), "{{instance}}", instant=True)],
            mappings=updown("FAILED", "OK"), steps=RED_GREEN,
        )
    )  # fmt: skip
    d.with_panel(
        stat_panel(
            33, "Version", "synthetic_monitor_build_info by version.", 6, 6,
            [query(sel("synthetic_monitor_build_info", f=""), "{{version}}", instant=True)],
            color_mode=cm.BigValueColorMode.NONE, text_mode=cm.BigValueTextMode.NAME,
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            34, "Scheduler job events",
            "Runs that crashed (error), started too late (missed) or were skipped because the previous run was still going (skipped).",
            8, 8,
            [query(f"sum by (probe, event) (increase({sel('synthetic_monitor_job_events_total', f='p')}[$__rate_interval])) > 0",
                   "{{probe}} {{event}}")],
            bars=True, legend_table=False,
        )
    )  # fmt: skip
    lag = sel("synthetic_monitor_schedule_lag_seconds_bucket", f="p")
    d.with_panel(
        timeseries_panel(
            35, "Schedule lag p95 / p99", "How late runs start against their schedule.", 8, 8,
            [
                query(f"histogram_quantile({q}, sum by (probe, le) (rate({lag}[$__rate_interval])))", f"p{p} {{{{probe}}}}", ref)
                for q, p, ref in (("0.95", "95", "A"), ("0.99", "99", "B"))
            ],
            unit="s", legend_table=False, interval="1m",
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            36, "Alert notifications", "Notifications the monitor's own alert engine sent, by receiver and result.", 8, 8,
            [query(f"sum by (receiver, result) (increase({sel('synthetic_monitor_notifications_total', f='')}[$__rate_interval])) > 0",
                   "{{receiver}} {{result}}")],
            bars=True, legend_table=False,
        )
    )  # fmt: skip
    job = 'job="synthetic-monitor"'
    d.with_panel(
        timeseries_panel(
            117, "Monitor memory vs limit",
            "Resident memory of each monitor process (process_resident_memory_bytes) against the container's "
            "384 MiB limit (dashed), and its CPU in cores (right axis).", 8, 12,
            [
                query(sel("process_resident_memory_bytes", job, f=""), "memory {{instance}}"),
                query(f"rate({sel('process_cpu_seconds_total', job, f='')}[5m])", "cpu {{instance}}", "B"),
            ],
            unit="bytes", legend_table=False, stacking=False,
        )
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
        .thresholds(thresholds(("green", None), ("red", 384 * 1024 * 1024)))
        .override_by_regexp(
            "cpu.*",
            [
                dm.DynamicConfigValue(id_val="unit", value="short"),
                dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
                dm.DynamicConfigValue(id_val="custom.axisLabel", value="cores"),
            ],
        )
    )  # fmt: skip
    d.with_panel(
        timeline_panel(
            118, "Alert receivers reachable",
            "Each receiver's host resolved and its port accepted a TCP connection at start-up or the last reload "
            "(synthetic_monitor_receiver_reachable); the daemon starts anyway.", 8, 12,
            query(sel("synthetic_monitor_receiver_reachable", f=""), "{{instance}} {{receiver}}"),
            updown("UNREACHABLE", "REACHABLE"),
        )
    )  # fmt: skip
    d.with_panel(
        stat_panel(
            119, "Web config reloads refused",
            "Changed --web.config.file contents the monitor refused in the last hour (the old one keeps serving).", 6, 8,
            [query(f"increase({sel('synthetic_monitor_web_config_reload_failures_total', f='')}[1h])", "{{instance}}",
                   instant=True)],
            decimals=0, steps=(("green", None), ("red", 0.5)),
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            120, "State file problems",
            "Alert state file errors in the last hour by reason (unreadable, invalid_json, wrong_shape, write_failed).",
            6, 8,
            [query(f"sum by (reason) (increase({sel('synthetic_monitor_state_file_errors_total', f='')}[1h]))",
                   "{{reason}}")],
            legend_table=False,
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            121, "Heartbeat pushes", "Watchdog heartbeat pushes per second by result (sent, failed, withheld).", 6, 8,
            [query(f"sum by (result) (rate({sel('synthetic_monitor_heartbeat_pushes_total', f='')}[5m]))", "{{result}}")],
            unit="reqps", legend_table=False,
        )
    )  # fmt: skip


def alerts_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Firing alerts").id(37))
    prom_alerts = sel("ALERTS", ALERT_NAMES, 'alertstate="firing"', f="")
    engine = sel("synthetic_monitor_alerts_firing")
    d.with_panel(
        table_panel(
            38, "Prometheus alerts firing",
            "Alerts from the PrometheusRule (deploy/prometheus/rules.yml) that are firing now.", 8, 12,
            query(prom_alerts, "", instant=True, fmt="table"), hidden("Time", "Value", "__name__"),
        )
    )  # fmt: skip
    d.with_panel(
        table_panel(
            39, "Monitor engine alerts firing",
            "Alerts the monitor's own engine holds firing (synthetic_monitor_alerts_firing); it notifies Alertmanager "
            "directly, so these appear even when Prometheus is down.", 8, 12,
            query(f"{engine} > 0", "", instant=True, fmt="table"), hidden("Time", "Value", "__name__"),
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            40, "Firing alerts over time",
            "Number of firing alert instances by name, from Prometheus (ALERTS) and from the monitor's engine.", 8, 24,
            [
                query(f"sum by (alertname) ({prom_alerts})", "prometheus: {{alertname}}"),
                query(f"sum by (alertname) ({engine}) > 0", "engine: {{alertname}}", "B"),
            ],
        )
    )  # fmt: skip


def locations_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Locations (fleet: availability per vantage point)").id(41))
    runs_ok = sel("synthetic_probe_runs_total", 'result="success"', f="tpl")
    runs = sel("synthetic_probe_runs_total", f="tpl")
    by = "sum by (location, target, probe)"
    d.with_panel(
        stat_panel(
            42, "Availability by location over the dashboard range",
            "Successful runs / all runs per location (the `location` target label the scrape adds). One location low "
            "and the others fine: that location's own path (SyntheticProbeFailingFromOneLocation), not the service.",
            8, 8,
            [query(ratio(f"{by} (increase({runs_ok}[$__range]))", f"{by} (increase({runs}[$__range]))"),
                   "{{location}}: {{target}} / {{probe}}", instant=True)],
            unit="percentunit", decimals=2, min_max=(0, 1), steps=(("red", None), ("orange", 0.95), ("green", 0.99)),
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            43, "Availability by location", "Per-location success ratio over time; replicas of one location are summed.",
            8, 16,
            [query(ratio(f"{by} (rate({runs_ok}[$__rate_interval]))", f"{by} (rate({runs}[$__rate_interval]))"),
                   "{{location}}: {{target}} / {{probe}}")],
            unit="percentunit", max_value=1, legend_calcs=("lastNotNull", "min"), stacking=False,
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            122, "Peer query errors",
            "Failed verdict queries to peers by reason (synthetic_monitor_peer_errors_total): any unauthorized or tls "
            "is a configuration fault, and the quorum runs without that peer.", 8, 12,
            [query(f"sum by (peer, reason) (rate({sel('synthetic_monitor_peer_errors_total', f='')}[5m]))",
                   "{{peer}} {{reason}}")],
            unit="reqps", legend_table=False,
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            123, "Peer verdict traffic", "Verdict bytes received from each peer (synthetic_monitor_peer_response_bytes_total).",
            8, 12,
            [query(f"sum by (instance, peer) (rate({sel('synthetic_monitor_peer_response_bytes_total', f='')}[5m]))",
                   "{{instance}} <- {{peer}}")],
            unit="Bps", legend_table=False,
        )
    )  # fmt: skip


def slo_row(d: db.Dashboard) -> None:
    d.with_row(db.Row("Service level objectives (error budgets)").id(101))
    budget_steps = (("red", None), ("orange", 0), ("green", 0.5))
    d.with_panel(
        stat_panel(
            102, "Error budget remaining (SLO window)",
            "Share of the availability error budget left over the SLO window (slo.window, default 30d): 100% = no "
            "failed run, 0 = budget spent, below 0 = objective missed. From `synthetic-monitor slo rules` "
            "(deploy/prometheus/slo.rules.yml).", 6, 8,
            [query(sel("target_probe:synthetic_probe_error_budget_remaining:ratio"), "{{target}} / {{probe}}", instant=True)],
            unit="percentunit", decimals=2, steps=budget_steps,
        )
    )  # fmt: skip
    d.with_panel(
        stat_panel(
            103, "Availability over the SLO window",
            "Successful runs / all runs over the SLO window; red below the probe's objective (slo.availability).", 6, 8,
            [query(f"1 - {sel('target_probe:synthetic_probe_runs_failure_per_runs:ratio_window')}",
                   "{{target}} / {{probe}}", instant=True)],
            unit="percentunit", decimals=2, min_max=(0, 1), steps=(("red", None), ("orange", 0.99), ("green", 0.995)),
        )
    )  # fmt: skip
    d.with_panel(
        stat_panel(
            104, "Latency budget remaining (SLO window)",
            "Share of the latency error budget left (slo.latency: that share of runs within the threshold). Empty for "
            "probes without a latency objective.", 6, 8,
            [query(sel("target_probe:synthetic_probe_latency_budget_remaining:ratio"), "{{target}} / {{probe}}", instant=True)],
            unit="percentunit", decimals=2, steps=budget_steps,
        )
    )  # fmt: skip
    for pid, title, description, ratio_name, objective in (
        (
            105, "Error budget burn rate",
            "Failed-run ratio divided by the error budget (1 - objective): 1 spends the budget exactly over the window. "
            "The pages are 14.4x over 1h (and 5m), 6x over 6h (and 30m); the tickets 3x over 1d, 1x over 3d.",
            "synthetic_probe_runs_failure_per_runs", "synthetic_probe_slo_objective",
        ),
        (
            106, "Latency budget burn rate",
            "Ratio of runs over the latency threshold divided by the latency budget (1 - objective).",
            "synthetic_probe_duration_slow_per_runs", "synthetic_probe_latency_slo_objective",
        ),
    ):  # fmt: skip
        d.with_panel(
            timeseries_panel(
                pid, title, description, 8, 12,
                [
                    # `on (cluster, target, probe) group_left ()`: each location's ratio divided by its
                    # cluster's objective (the recorded ratios keep `location`: many to one).
                    query(f"{sel(f'target_probe:{ratio_name}:ratio_rate{window}')}\n/ on (cluster, target, probe) group_left ()\n"
                          f"(1 - {sel(f'target_probe:{objective}:ratio')})", f"{{{{probe}}}} {window}", ref)
                    for window, ref in (("1h", "A"), ("6h", "B"), ("1d", "C"), ("3d", "D"))
                ],
                unit="none",
            )
        )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            107, "Availability per probe (1d) vs objective",
            "Successful runs / all runs over the last day, and each probe's objective as a dashed reference.", 8, 24,
            [
                query(f"1 - {sel('target_probe:synthetic_probe_runs_failure_per_runs:ratio_rate1d')}", "{{probe}}"),
                query(sel("target_probe:synthetic_probe_slo_objective:ratio"), "{{probe}} objective", "B"),
            ],
            unit="percentunit",
        )
    )  # fmt: skip
    d.with_panel(
        timeseries_panel(
            124, "Error budget burn per location (1h)",
            "Failed-run ratio over the last hour per location divided by the error budget (1 - objective). A "
            "critical burn pages only when enough locations burn (peers.min_locations); one location alone is a "
            "warning naming it.", 8, 24,
            [query(f"{sel('target_probe:synthetic_probe_runs_failure_per_runs:ratio_rate1h', f='tpl')}\n"
                   "/ on (cluster, target, probe) group_left ()\n"
                   f"(1 - {sel('target_probe:synthetic_probe_slo_objective:ratio')})", "{{location}}: {{probe}}")],
            unit="none", stacking=False,
        )
    )  # fmt: skip


ROWS = (
    probe_success_row,
    step_latency_row,
    failures_row,
    timeouts_row,
    targets_row,
    mlflow_row,
    asgard_row,
    monitor_row,
    alerts_row,
    locations_row,
    slo_row,
)


def build() -> dict[str, Any]:
    """The dashboard as the JSON object Grafana imports."""
    d = (
        db.Dashboard("Synthetic monitor: MLflow and Asgard")
        .uid(UID)
        .description(
            "Synthetic probes of MLflow and the Asgard MLOps API: success, latency per step, failures by reason, "
            "timeouts, worker failures, Asgard dependencies, the monitor's own health and firing alerts."
        )
        .tags(["synthetic-monitor", "mlflow", "asgard", "mlops"])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .timezone("browser")
        .refresh("30s")
        .time("now-6h", "now")
        .fiscal_year_start_month(0)
        .live_now(False)
        .week_start("")
        .version(1)
        .annotation(
            db.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
        .with_variable(
            db.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .regex("")
            .multi(False)
            .include_all(False)
            .hide(dm.VariableHide.DONT_HIDE)
        )
        .with_variable(value_query_variable("cluster", "Cluster", "label_values(synthetic_probe_runs_total, cluster)"))
        .with_variable(
            value_query_variable("target", "Target", f"label_values(synthetic_probe_runs_total{{{CLUSTER}}}, target)")
        )
        .with_variable(
            value_query_variable(
                "probe", "Probe", f'label_values(synthetic_probe_runs_total{{target=~"$target", {CLUSTER}}}, probe)'
            )
        )
        .with_variable(
            value_query_variable(
                "location",
                "Location",
                f'label_values(synthetic_probe_runs_total{{target=~"$target", {CLUSTER}}}, location)',
            )
        )
    )
    for row in ROWS:
        row(d)
    model = d.build()
    model.schema_version = 39  # Grafana 10.3+; what the hand-written file declared
    data: dict[str, Any] = json.loads(json.dumps(model, cls=JSONEncoder))
    return data


def render_dashboard() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------------------- ConfigMap

CONFIGMAP_HEADER = """\
# GENERATED by deploy/grafana/generate.py (with dashboard.json). Do not edit: change the
# generator and re-run it (tests/test_dashboard.py fails while this file is stale).
#
# Apply it in the namespace Grafana's dashboard sidecar watches, e.g.
#   kubectl -n monitoring apply -f deploy/grafana/dashboard-configmap.yaml
# The sidecar loads every ConfigMap labelled grafana_dashboard: "1"; the annotation
# grafana_folder is honoured when the sidecar's folderAnnotation is set to it.
"""


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings: the JSON stays readable and diffable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render_configmap(text: str) -> str:
    """The ConfigMap carrying `text` (dashboard.json) byte for byte under `synthetic-monitor.json`."""
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{UID}-dashboard",
            "labels": {"grafana_dashboard": "1", "app.kubernetes.io/name": "synthetic-monitor"},
            "annotations": {"grafana_folder": "MLOps"},
        },
        "data": {KEY: text},
    }
    return CONFIGMAP_HEADER + yaml.dump(configmap, Dumper=_Dumper, sort_keys=False, width=4096, allow_unicode=True)


def outputs() -> dict[Path, str]:
    """Each generated file and its fresh content."""
    text = render_dashboard()
    return {DASHBOARD: text, CONFIGMAP: render_configmap(text)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale: {', '.join(stale)}: run python deploy/grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
