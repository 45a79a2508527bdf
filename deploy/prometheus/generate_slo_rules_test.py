#!/usr/bin/env python3
"""Write slo.rules.test.yml: promtool cases for slo.rules.yml at known burn rates.

    python deploy/prometheus/generate_slo_rules_test.py

The cases (series and which alerts must fire) are written out below by hand; only the
expected annotations are copied from slo.rules.yml, so a reworded description does not
mean editing 20 expectations. Rerun after `synthetic-monitor slo rules` changed the
file; tests/test_slo_rules.py runs `promtool test rules` on the result. Needs PyYAML.
"""

import re
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
rules = yaml.safe_load((HERE / "slo.rules.yml").read_text(encoding="utf-8"))
alerts = {}
for g in rules["groups"]:
    for r in g["rules"]:
        if "alert" in r:
            alerts[(r["alert"], r["labels"]["probe"], r["labels"]["long_window"], r["labels"]["severity"])] = r
SEVERITY = {"1h": "critical", "6h": "critical", "1d": "warning", "3d": "warning"}


def expand(text, labels):
    text = re.sub(
        r"\{\{ with \$labels\.(\w+) \}\}(.*?)\{\{ \. \}\}(.*?)\{\{ end \}\}",
        lambda m: m.group(2) + labels[m.group(1)] + m.group(3) if labels.get(m.group(1)) else "",
        text,
    )
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)


def exp(alert, probe, window, severity=None, location=None):
    """The alert as it fires: a critical burn carries no location; a warning names it (if any)."""
    r = alerts[(alert, probe, window, severity or SEVERITY[window])]
    labels = dict(r["labels"], **({"location": location} if location else {}))
    return {"exp_labels": labels, "exp_annotations": {k: expand(v, labels) for k, v in r["annotations"].items()}}


JOB = 'job="synthetic-monitor",instance="127.0.0.1:9356"'
T0 = 4320  # minute at which the burn starts: 3 days of healthy history before it
DENSE = T0 - 180  # one sample an hour before this, one a minute after (keeps promtool fast)


def fmt(v):
    return f"{v:g}" if float(v) != int(v) else str(int(v))


def encode(values):
    """promtool's expanding notation: a+bxn is n+1 values, _xn is n missing ones."""
    out, i = [], 0
    while i < len(values):
        if values[i] is None:
            j = i
            while j < len(values) and values[j] is None:
                j += 1
            out.append(f"_x{j - i}")
            i = j
            continue
        j = i + 1
        step = None
        while j < len(values) and values[j] is not None:
            d = round(values[j] - values[j - 1], 9)
            if step is None:
                step = d
            elif d != step:
                break
            j += 1
        n = j - i - 1
        a = fmt(round(values[i], 9))
        if n == 0:
            out.append(a)
        elif step == 0:
            out.append(f"{a}x{n}")
        else:
            out.append(f"{a}{'+' if step > 0 else '-'}{fmt(abs(step))}x{n}")
        i = j
    return " ".join(out)


def cumulative(per_minute, end):
    """per_minute(m) -> increment at minute m; sampled hourly before DENSE, every minute after."""
    vals, total = [], 0.0
    for m in range(end + 1):
        total += per_minute(m) if m > 0 else 0
        vals.append(round(total, 9) if (m >= DENSE or m % 60 == 0) else None)
    return vals


def s(metric, labels, per_minute, end):
    return {"series": f"{metric}{{{JOB},{labels}}}", "values": encode(cumulative(per_minute, end))}


def check(t, alert, firing):
    return {"eval_time": f"{t}m", "alertname": alert, "exp_alerts": firing}


tests = []
W = ("1h", "6h", "1d", "3d")
EB, LB = "SyntheticProbeErrorBudgetBurn", "SyntheticProbeLatencyBudgetBurn"
R = 'target="mlflow",probe="mlflow_read"'
WR = 'target="mlflow",probe="mlflow_write"'
A = 'target="asgard",probe="asgard_api"'


def read_burn(minutes, location=None, until=T0):
    """The 30 s read probe (2 runs a minute) healthy, then every run failing for the last `minutes`;
    from one `location` (a label the scrape adds), reporting up to minute `until` (no samples after)."""
    where = R + (f',location="{location}"' if location else "")
    good = lambda m: 2 if m <= T0 - minutes else 0  # noqa: E731
    bad = lambda m: 0 if m <= T0 - minutes else 2  # noqa: E731
    out = []
    for result, per_minute in (("success", good), ("failure", bad)):
        values = [v if m <= until else None for m, v in enumerate(cumulative(per_minute, T0))]
        out.append(
            {"series": f'synthetic_probe_runs_total{{{JOB},{where},result="{result}"}}', "values": encode(values)}
        )
    return out


def write_runs(*failed):
    """The 5 min write probe: one run at every minute divisible by 5; the runs at `failed` fail."""
    return [
        s(
            "synthetic_probe_runs_total",
            WR + ',result="success"',
            lambda m: 1 if m % 5 == 0 and m not in failed else 0,
            T0,
        ),
        s("synthetic_probe_runs_total", WR + ',result="failure"', lambda m: 1 if m in failed else 0, T0),
    ]


def slow_runs(minutes):
    """The 30 s Asgard probe, every run passing, all runs slower than 1s for the last `minutes`."""
    return [
        s("synthetic_probe_runs_total", A + ',result="success"', lambda m: 2, T0),
        s("synthetic_probe_runs_total", A + ',result="failure"', lambda m: 0, T0),
        s("synthetic_probe_duration_seconds_bucket", A + ',le="1.0"', lambda m: 2 if m <= T0 - minutes else 0, T0),
        s("synthetic_probe_duration_seconds_bucket", A + ',le="+Inf"', lambda m: 2, T0),
        s("synthetic_probe_duration_seconds_count", A, lambda m: 2, T0),
    ]


# Each case holds three probes side by side (their rules select their own series), so
# promtool replays 3 days four times, not ten.
tests.append(
    {
        "name": "quiet: read probe 2 min of failures (4 of the hour's 120 runs); write probe ONE failed run "
        "(1/12 of the hour, above 0.072: only min_failures holds the page); asgard 30 min over 1s (60/120 < 0.72)",
        "interval": "1m",
        "input_series": read_burn(2) + write_runs(T0 - 5) + slow_runs(30),
        "alert_rule_test": [check(T0, EB, []), check(T0, LB, [])],
        "promql_expr_test": [
            {
                "expr": 'target_probe:synthetic_probe_runs_failure_per_runs:ratio_rate1h{probe="mlflow_write"} > 0.072',
                "eval_time": f"{T0}m",
                "exp_samples": [
                    {
                        "labels": f"target_probe:synthetic_probe_runs_failure_per_runs:ratio_rate1h{{{WR}}}",
                        "value": 1 / 12,
                    }
                ],
            },
        ],
    }
)
tests.append(
    {
        "name": "1h pages only: read probe 10 min of failures (20/120 > 0.072; 6h: 20/720 < 0.03); write probe a "
        "second failed run within the hour (2/12; 10m window 1/2); asgard 60 min over 1s (latency, not errors)",
        "interval": "1m",
        "input_series": read_burn(10) + write_runs(T0 - 35, T0) + slow_runs(60),
        "alert_rule_test": [
            check(T0, EB, [exp(EB, "mlflow_read", "1h"), exp(EB, "mlflow_write", "1h")]),
            check(T0, LB, [exp(LB, "asgard_api", "1h")]),
        ],
    }
)
tests.append(
    {
        "name": "every pair: read probe 30 min of failures (1h, 6h critical; 1d, 3d warning); "
        "write probe two failed runs more than an hour apart stay quiet",
        "interval": "1m",
        "input_series": read_burn(30) + write_runs(T0 - 65, T0),
        "alert_rule_test": [check(T0, EB, [exp(EB, "mlflow_read", w) for w in W]), check(T0, LB, [])],
    }
)
tests.append(
    {
        "name": "read probe: a steady 1.5x burn (0.75 % failed) for 3 days is a 3d warning and nothing else",
        "interval": "1m",
        "input_series": [
            s("synthetic_probe_runs_total", R + ',result="success"', lambda m: 1.985, T0),
            s("synthetic_probe_runs_total", R + ',result="failure"', lambda m: 0.015, T0),
        ],
        "alert_rule_test": [check(T0, EB, [exp(EB, "mlflow_read", "3d")])],
    }
)
# ---- locations: the SLI and its burn are per location; a critical burn needs 2 of them.
tests.append(
    {
        "name": "one of two locations burning (a fails 30 min, b healthy): no critical, a warning per pair naming a",
        "interval": "1m",
        "input_series": read_burn(30, "a") + read_burn(0, "b"),
        "alert_rule_test": [
            check(T0, EB, [exp(EB, "mlflow_read", w, "warning", "a") for w in W]),
            check(T0, LB, []),
        ],
    }
)
tests.append(
    {
        "name": "two of two locations burning: critical 1h and 6h (no location), the day-long warnings per location",
        "interval": "1m",
        "input_series": read_burn(30, "a") + read_burn(30, "b"),
        "alert_rule_test": [
            check(
                T0,
                EB,
                [exp(EB, "mlflow_read", "1h"), exp(EB, "mlflow_read", "6h")]
                + [exp(EB, "mlflow_read", w, "warning", loc) for w in ("1d", "3d") for loc in ("a", "b")],
            ),
        ],
    }
)
tests.append(
    {
        "name": "a burns, b stopped reporting 10 min ago: b is no vote in the 5m window, so a alone is the quorum "
        "of 1h (critical); b still reports in the 30m window, so 6h stays a warning naming a",
        "interval": "1m",
        "input_series": read_burn(30, "a") + read_burn(0, "b", until=T0 - 10),
        "alert_rule_test": [
            check(
                T0,
                EB,
                [exp(EB, "mlflow_read", "1h"), exp(EB, "mlflow_read", "6h", "warning", "a")]
                + [exp(EB, "mlflow_read", w, "warning", "a") for w in ("1d", "3d")],
            ),
        ],
    }
)
doc = {"rule_files": ["slo.rules.yml"], "evaluation_interval": "1h", "tests": tests}
head = """# Unit tests for slo.rules.yml:  promtool test rules deploy/prometheus/slo.rules.test.yml
#
# Series burn the error (or latency) budget at known rates after 3 days of healthy
# history (so the 3d window holds data) and each case says exactly which burn-rate alerts
# fire. Objectives (deploy/kubernetes/base/config.yaml): 99.5 % of runs, 95 % of runs
# within 1s (5s for the write probe); thresholds = factor x budget: 14.4x = 0.072,
# 6x = 0.03, 3x = 0.015, 1x = 0.005 (latency: 0.72, 0.3, 0.15, 0.05). Minutes count
# from the start; every case is checked at 4320m (3 days). Old history is sampled once
# an hour (`_` = no sample) and rules are evaluated hourly so promtool runs in seconds:
# no rule has a `for`, and each alert reads recordings of the same evaluation.
# GENERATED by generate_slo_rules_test.py (the cases are written there); run by
# tests/test_slo_rules.py.

"""


def render() -> str:
    return head + yaml.safe_dump(doc, sort_keys=False, width=100000)


if __name__ == "__main__":
    (HERE / "slo.rules.test.yml").write_text(render(), encoding="utf-8")
    print("wrote deploy/prometheus/slo.rules.test.yml")
