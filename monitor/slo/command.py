"""The `slo` subcommand: `slo rules` (a Prometheus rule file) and `slo report` (over a window).

Exit codes of `slo report`: 0 every objective met, 1 any missed, 2 a usage or config
error, Prometheus unreachable or answering an error, or no probe data in the window.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import time
from typing import Any

from monitor.config import Config, load_config
from monitor.slo.model import Objectives, format_window, parse_window, resolve
from monitor.slo.prom import Prometheus, PrometheusError
from monitor.slo.render import RENDERERS
from monitor.slo.report import STEP, build_report
from monitor.slo.rules import DEFAULT_MIN_LOCATIONS, render_rules

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(sub: Any) -> None:
    slo = sub.add_parser("slo", help="service level objectives: Prometheus rules, the report over a window")
    slo_sub = slo.add_subparsers(dest="slo_command", required=True)
    rules = slo_sub.add_parser("rules", help="print the recording and burn-rate alert rules for the objectives")
    rules.add_argument("--config", help="YAML config file (default: $SYNTHETIC_MONITOR_CONFIG, else built-in defaults)")
    report = slo_sub.add_parser("report", help="availability, budget, failures and latency over a window")
    report.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://prometheus:9090")
    report.add_argument("--config", help="YAML config file with the objectives (default as for `run`)")
    report.add_argument("--window", default=None, help="length of the window (default: the config's slo.window)")
    report.add_argument(
        "--end",
        default=None,
        help="end of the window: RFC 3339 time, a date (its 00:00 UTC) or Unix seconds (default: now)",
    )
    report.add_argument("--format", choices=sorted(RENDERERS), default="table")


def objectives(config: Config) -> dict[str, Objectives | None]:
    return {p.name: resolve(config.slo, p) for p in config.probes}


def _rules(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    selected = [o for o in objectives(config).values() if o is not None]
    source = args.config or os.environ.get("SYNTHETIC_MONITOR_CONFIG") or None
    min_locations = config.peers.min_locations if config.peers is not None else DEFAULT_MIN_LOCATIONS
    text, warnings = render_rules(selected, config.metrics.buckets, source, min_locations)
    for warning in warnings:
        print(f"synthetic-monitor: warning: {warning}", file=sys.stderr)
    sys.stdout.write(text)
    return EXIT_OK


def parse_end(value: str | None) -> float:
    """Unix seconds, floored to the minute so the per-minute differences line up."""
    if value is None:
        seconds = time.time()
    else:
        try:
            seconds = float(value)
        except ValueError:
            try:
                moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"--end: expected RFC 3339, a date or Unix seconds, got {value!r}") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            seconds = moment.timestamp()
    return math.floor(seconds / STEP) * STEP


def _report(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        window = parse_window(args.window) if args.window is not None else config.slo.window
        if window < 2 * STEP or window % STEP:
            raise ValueError(f"--window must be a whole number of minutes, at least 2m, got {args.window!r}")
        end = parse_end(args.end)
    except ValueError as exc:
        message = str(exc) if str(exc).startswith("--") else f"--window {exc}"
        print(f"synthetic-monitor: {message}", file=sys.stderr)
        return EXIT_USAGE
    default = Objectives(
        "",
        "",
        0.0,
        config.slo.availability / 100,
        config.slo.window,
        config.slo.latency.threshold if config.slo.latency else None,
        config.slo.latency.objective / 100 if config.slo.latency else None,
        config.slo.min_failures,
    )
    try:
        with Prometheus(args.prometheus) as prom:
            report = build_report(prom, end, window, objectives(config), default, config.metrics.buckets)
    except PrometheusError as exc:
        print(f"synthetic-monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not report.probes:
        ending = dt.datetime.fromtimestamp(end, dt.UTC)
        print(
            f"synthetic-monitor: Prometheus at {report.prometheus} has no synthetic_probe_runs_total data in the "
            f"window ({format_window(window)} ending {ending:%Y-%m-%d %H:%M} UTC)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    print(RENDERERS[args.format](report))
    return EXIT_OK if report.ok else EXIT_FAILED


def run_slo(args: argparse.Namespace) -> int:
    if args.slo_command == "rules":
        return _rules(args)
    return _report(args)
