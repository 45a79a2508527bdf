"""The quorum alert rules for Prometheus, generated with the config's `peers.min_locations`.

Every critical alert derived from a probe needs `min_locations` locations (or all that
report, when fewer do) in the rules as in the daemon's gate (alerting/quorum.py); fewer
make the warning that names the location. `synthetic-monitor rules` prints this group,
and `--write FILE` replaces the group of the same name in a rules file (the shipped
deploy/prometheus/rules.yml, generated from the base ConfigMap's config; a test checks it
is not stale). The other groups of that file are hand-written and left untouched.

A location is the scrape label `location`; replicas in one location count once
(`max by location`). A location that stops reporting is no vote (its series go stale):
that is SyntheticMonitorDown's job. `job` and `namespace` are kept so routing and the
namespace-scoped inhibition of deploy/alertmanager still work.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from monitor.scenario.contract import QuorumRule
from monitor.scenario.registry import KINDS

GROUP = "synthetic-monitor.quorum"
RUNBOOK = "https://runbooks.example.internal/synthetic-monitor#"
BY = "job, namespace, target, probe"
DEFAULT_MIN_LOCATIONS = 2


def _locations(selector: str, extra: str = "") -> str:
    """How many locations see `selector` (replicas of one location count once)."""
    return f"count by ({BY}{extra}) (max by ({BY}{extra}, location) ({selector}))"


def _quorum(
    selector: str, min_locations: int, extra: str = "", base: str = "synthetic_probe_consecutive_failures"
) -> str:
    """At least min_locations of the locations reporting `base` (or all of them when fewer do)."""
    reporting = f"count by ({BY}) (max by ({BY}, location) ({base}))"
    join = f"on ({BY}) group_left" if extra else f"on ({BY})"
    return f"{_locations(selector, extra)}\n>= {join}\nclamp_max({reporting}, {min_locations})\n"


def _one_location(
    selector: str, min_locations: int, extra: str = "", base: str = "synthetic_probe_consecutive_failures"
) -> str:
    return (
        f"max by ({BY}{extra}, location) ({selector})\n"
        f"unless on ({BY}{extra})\n(\n{_quorum(selector, min_locations, extra, base)})\n"
    )


# Runs inside a maintenance window (synthetic_probe_maintenance == 1) page nobody; the
# counter-based rule looks back as far as its own range, so a window's failures do not
# page right after it ends.
IN_MAINTENANCE = "unless on (target, probe) synthetic_probe_maintenance == 1"
FAILING = f"synthetic_probe_consecutive_failures >= 2 {IN_MAINTENANCE}"


def _fill(text: str, texts: dict[str, str]) -> str:
    """Put the quorum sentences in (plain replacement: the texts hold Go templates' braces)."""
    for name, value in texts.items():
        text = text.replace("{" + name + "}", value)
    return text


def _kind_rules(rule: QuorumRule, name: str, m: int) -> list[dict[str, Any]]:
    """A kind's declared quorum rule: the critical page and its one-location warning."""
    if rule.maintenance_range:
        excluded = (
            f" unless on (target, probe) max_over_time(synthetic_probe_maintenance[{rule.maintenance_range}]) == 1"
        )
    else:
        excluded = f" {IN_MAINTENANCE}"
    failing = rule.failing + excluded
    texts = {
        "quorum": f"the quorum of {m} location(s), or all that report",
        "below": f"Below the quorum of {m} location(s): likely that location's own path, not the service; no page.",
    }
    timing = {"for": rule.for_} if rule.for_ else {}
    return [
        {
            "alert": name,
            "expr": _quorum(failing, m, rule.extra, base=rule.reporting),
            **timing,
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": rule.summary,
                "description": _fill(rule.description, texts),
                "runbook_url": RUNBOOK + rule.runbook,
            },
        },
        {
            "alert": name,
            "expr": _one_location(failing, m, rule.extra, base=rule.reporting),
            **timing,
            "labels": {"severity": "warning", **rule.warning_labels},
            "annotations": {
                "summary": rule.warning_summary,
                "description": _fill(rule.warning_description, texts),
                "runbook_url": RUNBOOK + rule.runbook,
            },
        },
    ]


def quorum_group(min_locations: int = DEFAULT_MIN_LOCATIONS) -> dict[str, Any]:
    """The rule group: each critical alert from a probe and its one-location warning."""
    m = min_locations
    rules: list[dict[str, Any]] = [
        {
            "alert": "SyntheticProbeFailing",
            "expr": _quorum(FAILING, m),
            "for": "1m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "Synthetic probe {{ $labels.probe }} on {{ $labels.target }} keeps failing",
                "description": (
                    "Probe {{ $labels.probe }} against target {{ $labels.target }} has failed at least 2 runs in a"
                    " row from {{ $value }} location(s), the quorum. The failing step and reason are on the"
                    " monitors' /status pages and in synthetic_probe_step_failures_total."
                ),
                "runbook_url": RUNBOOK + "syntheticprobefailing",
            },
        },
        {
            "alert": "SyntheticProbeFailingFromOneLocation",
            "expr": _one_location(FAILING, m),
            "for": "1m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": (
                    "Probe {{ $labels.probe }} on {{ $labels.target }} fails from location {{ $labels.location }} only"
                ),
                "description": (
                    "Probe {{ $labels.probe }} against target {{ $labels.target }} has failed {{ $value }} runs in"
                    " a row from location {{ $labels.location }}, while the other locations see it pass: likely that"
                    f" location's own path, not the service. No page below the quorum of {m} locations."
                ),
                "runbook_url": RUNBOOK + "syntheticprobefailingfromonelocation",
            },
        },
    ]
    for kind in KINDS.values():
        for alert in kind.alerts:
            if alert.quorum_rule is not None:
                rules += _kind_rules(alert.quorum_rule, alert.name, m)
    return {"name": GROUP, "rules": rules}


class _Literal(str):
    """A multi-line expression, written as a YAML block scalar."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)


def render_group(min_locations: int, source: str | None) -> str:
    """The group as YAML text (a list item, indented for a rules file's `groups:`)."""
    group = quorum_group(min_locations)
    for rule in group["rules"]:
        rule["expr"] = _Literal(rule["expr"])
    body = yaml.dump([group], Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
    header = (
        f"# BEGIN {GROUP}: generated by `synthetic-monitor rules"
        f"{' --config ' + source if source else ''}` (min_locations {min_locations}); do not edit.\n"
    )
    indented = "".join(f"  {line}" if line.strip() else line for line in body.splitlines(keepends=True))
    return header.replace("# BEGIN", "  # BEGIN") + indented + f"  # END {GROUP}\n"


_SPLICE = re.compile(rf"  # BEGIN {re.escape(GROUP)}.*?  # END {re.escape(GROUP)}\n", re.S)


def splice(text: str, group: str) -> str:
    """`text` (a rules file) with the generated group replaced, or appended when absent."""
    if _SPLICE.search(text):
        return _SPLICE.sub(lambda _: group, text, count=1)
    return text.rstrip("\n") + "\n\n" + group


def add_parser(sub: Any) -> None:
    rules = sub.add_parser("rules", help="print the quorum alert rules (min_locations from the config's peers)")
    rules.add_argument("--config", help="YAML config file (default: $SYNTHETIC_MONITOR_CONFIG, else built-in defaults)")
    rules.add_argument("--write", metavar="FILE", help="replace the generated group in this rules file instead")


def run_rules(args: Any) -> int:
    from monitor.config import load_config  # the CLI's path only; the module itself is pure

    config = load_config(args.config)
    minimum = config.peers.min_locations if config.peers is not None else DEFAULT_MIN_LOCATIONS
    source = args.config or os.environ.get("SYNTHETIC_MONITOR_CONFIG") or None
    group = render_group(minimum, source)
    if args.write:
        path = Path(args.write)
        path.write_text(splice(path.read_text(encoding="utf-8"), group), encoding="utf-8")
    else:
        sys.stdout.write(group)
    return 0
