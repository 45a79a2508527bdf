"""What a target kind declares beyond its scenarios: its diagnosis components and its alerts.

The core knows the generic components (`server`, `network`, `auth`, `config`, `monitor`)
and the generic alerts (failing, timeout, latency, stall); everything specific to one
kind of service is declared by its plug-in with these types, so the diagnosis and the
alert engine read declarations instead of naming a service.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from monitor.results import ProbeResult, StepResult


@dataclass(frozen=True, slots=True)
class QuorumRule:
    """A kind's critical alert as a Prometheus rule that needs a quorum of locations, plus its
    one-location warning (monitor/alerting/rules.py renders both; the core adds the quorum
    arithmetic and the maintenance exclusion). In the texts, `{quorum}` becomes "the quorum
    of N location(s), or all that report" and `{below}` the below-quorum sentence."""

    failing: str  # PromQL: this daemon sees the condition (by target, probe and `extra`)
    reporting: str  # PromQL: a series every location exports from start-up (who can vote)
    summary: str
    description: str
    warning_summary: str
    warning_description: str
    runbook: str  # the runbook anchor
    extra: str = ""  # more grouping labels, e.g. ", dependency"
    for_: str | None = None
    warning_labels: Mapping[str, str] = field(default_factory=dict)
    # Counter-based conditions look back over a range: the maintenance exclusion must too.
    maintenance_range: str | None = None


@dataclass(frozen=True, slots=True)
class Component:
    """A part on-call can be sent to: its diagnosis name and one line of what it means and
    where to look (the runbook text; the runbook anchor is `diagnosis-<name>`)."""

    name: str
    runbook: str


# The components every kind has; a kind adds its own (and may name its own server part).
GENERIC_COMPONENTS = (
    Component("server", "the target's server (its process or workers)"),
    Component("network", "the network path to the target (DNS, TLS, routing)"),
    Component("auth", "the probe's credentials or permissions"),
    Component("config", "the monitor's configuration of this target (URL, host, path)"),
    Component("monitor", "the synthetic monitor itself (not the target)"),
)


class Verdict(enum.Enum):
    """What one run says about one alert: bad counts toward firing, good toward resolving,
    neutral changes nothing (the run could not tell, or another alert covers it)."""

    BAD = "bad"
    GOOD = "good"
    NEUTRAL = "neutral"


@dataclass(frozen=True, slots=True)
class AlertInput:
    """What a kind's alert rule sees of one run: the result, the dependencies that already
    have a state for this (target, probe) (so a dependency no longer reported can resolve),
    the diagnosis sentence for descriptions, and the engine's one-line step text."""

    result: ProbeResult
    known: frozenset[str]
    diagnosis: str
    step_text: Callable[[StepResult | None], str]


# One verdict of a rule: (dependency or '', verdict, description from the count of bad runs in a row).
AlertVerdict = tuple[str, Verdict, Callable[[int], str]]


@dataclass(frozen=True, slots=True)
class KindAlert:
    """An alert a kind adds to the generic ones; the same name and severity as its rule in
    deploy/prometheus/rules.yml. `every_kind`: judged on every run whatever its target's kind
    (a rule on a generic reason, which Prometheus evaluates for every target as well)."""

    name: str
    severity: str
    verdicts: Callable[[AlertInput], Iterable[AlertVerdict]]
    summary: Callable[[str, str, str], str]  # (target, probe, dependency) -> one line
    dependency_severity: Mapping[str, str] = field(default_factory=dict)
    every_kind: bool = False
    # Which failure reason of a peer's run confirms it for the quorum (None: any failed run).
    confirming_reason: str | None = None
    # Its Prometheus rule with a quorum of locations (critical alerts from a probe).
    quorum_rule: QuorumRule | None = None

    def severity_of(self, dependency: str) -> str:
        return self.dependency_severity.get(dependency, self.severity)
