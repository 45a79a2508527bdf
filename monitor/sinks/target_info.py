"""`synthetic_target_info{target, version, store_type, multipart_uploads}`: which server version a
target runs and what it reports it can do ('' where it does not say).

A gauge of 1 with the version as a label, so a latency change on the dashboard can be
lined up with an upgrade. One series per target: a new version replaces the old series
(no stale second series), and there is none until a probe has read the version.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

# Fed by `Facts.target_version`, which a scenario sets when it has read the target's
# version (e.g. from the service's version endpoint).


class TargetInfo:
    """The info last seen per target, kept in step with the gauge's series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "synthetic_target_info",
            "Always 1; the labels are the target's server version and the capabilities it reports.",
            ["target", "version", "store_type", "multipart_uploads"],
            registry=registry,
        )
        self._labels: dict[str, tuple[str, str, str]] = {}

    def observe(
        self, target: str, version: object, store_type: str | None = None, multipart_uploads: bool | None = None
    ) -> None:
        """Record a version read from `target`; anything but a non-empty string is ignored."""
        if not isinstance(version, str) or not version:
            return
        multipart = "" if multipart_uploads is None else str(multipart_uploads).lower()
        labels = (version, store_type or "", multipart)
        previous = self._labels.get(target)
        if previous == labels:
            return
        if previous is not None:
            self.gauge.remove(target, *previous)
        self._labels[target] = labels
        self.gauge.labels(target, *labels).set(1)

    def forget(self, target: str) -> None:
        """Drop a target's series (no probe of it is configured any more)."""
        previous = self._labels.pop(target, None)
        if previous is not None:
            self.gauge.remove(target, *previous)
