"""The dashboard as code: deploy/grafana/generate.py is the source, the JSON and its ConfigMap are outputs.

The committed dashboard.json and dashboard-configmap.yaml must equal a fresh rendering, and
every query must honour the `cluster` variable (kube-prometheus-stack's external label).
tests/test_deploy.py checks the queries with promtool and against the exported metric names.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.test_deploy import dashboard_queries, metric_names

GRAFANA = Path(__file__).resolve().parents[1] / "deploy" / "grafana"
CLUSTER = 'cluster=~"$cluster"'


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _raw_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL text of the dashboard as committed: panel targets and variable queries."""
    panels = [*dashboard["panels"], *(p for row in dashboard["panels"] for p in row.get("panels", []))]
    exprs = [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(selector, label): the selector
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", variable["query"]["query"]))
    return exprs


def unfiltered_selectors(expr: str) -> list[str]:
    """The metric selectors in `expr` that do not filter on `$cluster`, and `on (...)` joins without it."""
    misses = []
    for name in sorted(metric_names(expr)):
        for match in re.finditer(rf"(?<![\w:]){re.escape(name)}(?![\w:])(\{{[^}}]*\}})?", expr):
            if CLUSTER not in (match.group(1) or ""):
                misses.append(match.group(0))
    for match in re.finditer(r"\bon\s*\(([^)]*)\)", expr):
        if "cluster" not in match.group(1).replace(" ", "").split(","):
            misses.append(match.group(0))
    return misses


def test_unfiltered_selectors_finds_a_selector_without_cluster() -> None:
    assert unfiltered_selectors(f'sum(rate(a_total{{x="1", {CLUSTER}}}[5m])) / on (cluster, t) b{{{CLUSTER}}}') == []
    assert unfiltered_selectors('a_total{x="1"} / b') == ['a_total{x="1"}', "b"]
    assert unfiltered_selectors(f"a{{{CLUSTER}}} / on (target) b{{{CLUSTER}}}") == ["on (target)"]


def test_committed_dashboard_and_configmap_are_fresh() -> None:
    for path, text in _generator().outputs().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is stale: run python deploy/grafana/generate.py"


def test_configmap_carries_the_dashboard_byte_for_byte() -> None:
    configmap = yaml.safe_load((GRAFANA / "dashboard-configmap.yaml").read_text(encoding="utf-8"))
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"synthetic-monitor.json": (GRAFANA / "dashboard.json").read_text(encoding="utf-8")}


def test_every_query_honours_the_cluster_variable() -> None:
    dashboard = json.loads((GRAFANA / "dashboard.json").read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    cluster = variables["cluster"]
    assert cluster["type"] == "query" and cluster["multi"] and cluster["includeAll"]
    assert cluster["allValue"] == ".*"  # "All" also matches series without the label (one Prometheus)
    assert cluster["query"]["query"] == "label_values(synthetic_probe_runs_total, cluster)"
    assert "location" in variables  # the fleet's vantage points stay
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names.index("cluster") < names.index("target"), "cluster narrows the other variables: it comes first"
    queries = [q for q in _raw_queries(dashboard) if q != "synthetic_probe_runs_total"]  # the cluster variable
    assert len(queries) > 50  # every panel target and variable, not a sample
    misses = {q: unfiltered_selectors(q) for q in queries if unfiltered_selectors(q)}
    assert not misses, f"queries that ignore $cluster: {misses}"


def test_the_checked_queries_include_the_cluster_filter() -> None:
    """tests/test_deploy.py checks these with promtool and the metric names: `$cluster` is substituted there."""
    assert all("$" not in q for q in dashboard_queries())
