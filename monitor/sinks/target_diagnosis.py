"""`synthetic_target_diagnosis{target, component}`: the one component blamed now per target.

1 for the culprit the latest result of the target carries (`ProbeResult.target_diagnosis`,
stamped by monitor/culprit.py); no series at all while the target is healthy, so
`synthetic_target_diagnosis == 1` selects exactly the incidents and their culprits.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge


class TargetDiagnosisGauge:
    """The component blamed per target, kept in step with the gauge's single series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "synthetic_target_diagnosis",
            "1 for the component now blamed for the target's failures (one culprit per incident); absent when healthy.",
            ["target", "component"],
            registry=registry,
        )
        self._blamed: dict[str, str] = {}

    def observe(self, target: str, component: str | None) -> None:
        previous = self._blamed.get(target)
        if previous == component:
            return
        if previous is not None:
            self.gauge.remove(target, previous)
            del self._blamed[target]
        if component is not None:
            self._blamed[target] = component
            self.gauge.labels(target, component).set(1)

    def forget(self, target: str) -> None:
        self.observe(target, None)
