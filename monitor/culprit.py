"""One culprit per incident: a target-level diagnosis over the latest runs of all its probes.

Each run names its own broken part (monitor/diagnosis.py), but during one outage the
probes of a target see different symptoms (a stalled S3 holds every sync worker, so the
read probe's /health times out while the write probe's artifact step names the store).
This enricher keeps the latest enriched result of every probe and stamps each result
with `target_diagnosis`: the one component to blame now for its target (None: healthy).
The target kind may declare the differential rule (`TargetKind.culprit`, e.g. a tracking server's
"routes that touch no store answered, the database routes timed out"); without one the
component blamed first in the incident wins. A result whose failure the cross-check put
on another target (`root_cause`) takes that target's culprit.

The store holds only what it is handed (one direction: results in, a stamped copy out);
the metrics sink exports the stamp as `synthetic_target_diagnosis`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

from monitor.diagnosis import is_monitor_fault
from monitor.results import Blame, Diagnosis, ProbeResult
from monitor.scenario.base import ConfigView
from monitor.scenario.registry import KINDS, SCENARIOS

# A kind's rule: (the fresh latest results of the target, oldest first; every component blamed
# in this incident, also by runs since replaced) -> the culprit, or None when healthy.
CulpritRule = Callable[[Sequence[ProbeResult], Mapping[str, Blame]], "Diagnosis | None"]

# A probe's latest result counts while it is younger than this many of its intervals (a
# removed or stalled probe's last failure must not blame forever).
FRESH_INTERVALS = 2.5


def first_blamed(results: Sequence[ProbeResult], incident: Mapping[str, Blame]) -> Diagnosis | None:
    """The generic rule: of the components the latest runs blame, the one blamed first in the incident."""
    now = {r.diagnosis.component for r in results if r.diagnosis is not None and not r.ok}
    if not now:
        return None
    first = min(now, key=lambda c: (incident[c].first_at, c) if c in incident else (float("inf"), c))
    blame = incident.get(first)
    if blame is None:
        return None
    return Diagnosis(first, f"{blame.summary} (probe {blame.probe})")


class TargetCulprit:
    """The enricher: the latest result per probe, the incident's onsets per target, the stamp."""

    def __init__(self, config: ConfigView, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        # The latest result per probe, by target: a result costs a scan of its own target's
        # probes, not of every probe (at 1,000 probes the full scan, and a dict of every
        # probe's interval rebuilt per result, were a fifth of the loop in a wide outage).
        self._latest: dict[str, dict[str, ProbeResult]] = {}
        self._target_of: dict[str, str] = {}
        self._intervals: dict[str, float] = {}
        self._intervals_of: object = None  # the probe list `_intervals` was built from
        self._incidents: dict[str, dict[str, Blame]] = {}
        self._current: dict[str, Diagnosis] = {}

    def enrich(self, result: ProbeResult) -> ProbeResult:
        if not is_monitor_fault(result):  # the monitor's own trouble is no evidence about the target
            if self._target_of.get(result.probe, result.target) != result.target:
                self.forget(result.probe)  # moved to another target by a reload
            self._target_of[result.probe] = result.target
            self._latest.setdefault(result.target, {})[result.probe] = result
        diagnosis = self._diagnose(result.target)
        if result.root_cause is not None and not result.ok:
            upstream = self._current.get(result.root_cause)
            if upstream is not None:
                diagnosis = Diagnosis(upstream.component, f"{upstream.summary} (via target {result.root_cause})")
                self._current[result.target] = diagnosis
        return (
            dataclasses.replace(result, target_diagnosis=diagnosis) if diagnosis != result.target_diagnosis else result
        )

    def current(self) -> dict[str, Diagnosis]:
        """The culprit now blamed per target (healthy targets absent)."""
        return dict(self._current)

    def forget(self, probe: str) -> None:
        target = self._target_of.pop(probe, None)
        if target is not None:
            self._latest.get(target, {}).pop(probe, None)

    def _probe_intervals(self) -> dict[str, float]:
        probes = self.config.probes
        if probes is not self._intervals_of:  # a reload brings a new list
            self._intervals = {p.name: float(getattr(p, "interval", 0) or 0) for p in probes}
            self._intervals_of = probes
        return self._intervals

    def _fresh(self, target: str) -> list[ProbeResult]:
        now = self._clock()
        intervals = self._probe_intervals()
        out = []
        for result in self._latest.get(target, {}).values():
            interval = intervals.get(result.probe)
            ended = result.started_at + result.duration_seconds
            if interval and now - ended > FRESH_INTERVALS * interval + result.timeout_seconds:
                continue
            out.append(result)
        return sorted(out, key=lambda r: r.started_at)

    def _diagnose(self, target: str) -> Diagnosis | None:
        results = self._fresh(target)
        failing = [(r, r.diagnosis) for r in results if not r.ok and r.diagnosis is not None]
        if not failing:  # healthy: the incident is over
            self._current.pop(target, None)
            self._incidents.pop(target, None)
            return None
        incident = self._incidents.setdefault(target, {})
        for result, own in failing:
            known = incident.get(own.component)
            if known is None or result.started_at >= known.last_at:
                first = known.first_at if known is not None else result.started_at
                seen = known.evidence if known is not None else frozenset()
                if own.evidence not in seen:
                    seen = seen | {own.evidence}
                incident[own.component] = Blame(first, result.started_at, own.summary, result.probe, seen)
        culprit = self._rule(results)(results, dict(incident))
        if culprit is None:
            self._current.pop(target, None)
        else:
            self._current[target] = culprit
        return culprit

    @staticmethod
    def _rule(results: Sequence[ProbeResult]) -> CulpritRule:
        for result in results:
            scenario = SCENARIOS.get(result.scenario)
            kind = KINDS.get(scenario.target_kind) if scenario is not None else None
            if kind is not None and kind.culprit is not None:
                return kind.culprit
        return first_blamed
