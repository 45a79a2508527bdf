"""`synthetic_target_info{target, version}`: which server version a target runs.

A gauge of 1 with the version as a label, so a latency change on the dashboard can be
lined up with an upgrade. One series per target: a new version replaces the old series
(no stale second series), and there is none until a probe has read the version.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

# Fed by `Facts.target_version`, which a scenario sets when it has read the target's
# version (e.g. from the service's version endpoint).


class TargetInfo:
    """The versions last seen per target, kept in step with the gauge's series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "synthetic_target_info",
            "Always 1; the version label is the target's server version.",
            ["target", "version"],
            registry=registry,
        )
        self._versions: dict[str, str] = {}

    def observe(self, target: str, version: object) -> None:
        """Record a version read from `target`; anything but a non-empty string is ignored."""
        if not isinstance(version, str) or not version:
            return
        previous = self._versions.get(target)
        if previous == version:
            return
        if previous is not None:
            self.gauge.remove(target, previous)
        self._versions[target] = version
        self.gauge.labels(target, version).set(1)

    def forget(self, target: str) -> None:
        """Drop a target's series (no probe of it is configured any more)."""
        previous = self._versions.pop(target, None)
        if previous is not None:
            self.gauge.remove(target, previous)
