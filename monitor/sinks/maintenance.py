"""`synthetic_probe_maintenance{target,probe}`: 1 while a maintenance window covers the probe.

Computed at scrape time from the windows (not from results), so it flips when a window
opens even between two runs of a slow probe; every configured probe has its series (0)
from start-up, as the metric contract asks. The Prometheus rules and the generated SLO
rules exclude a probe's runs from paging and from the error budget through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from monitor.maintenance import Maintenance

NAME = "synthetic_probe_maintenance"
HELP = "1 while a maintenance window covers the probe: its alerts are held, its runs left out of SLOs."


class MaintenanceGauge(Collector):
    def __init__(self, maintenance: Maintenance, probes: Callable[[], list[tuple[str, str]]]) -> None:
        self._maintenance = maintenance
        self._probes = probes

    def _values(self) -> list[tuple[str, str, int]]:
        pairs = self._probes()
        covered = self._maintenance.in_maintenance(pairs)
        return [(target, probe, 1 if probe in covered else 0) for probe, target in pairs]

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The name alone: registering must not ask for the probes (not wired yet then)."""
        yield GaugeMetricFamily(NAME, HELP, labels=["target", "probe"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(NAME, HELP, labels=["target", "probe"])
        for target, probe, value in self._values():
            family.add_metric([target, probe], value)
        yield family

    def render(self) -> bytes:
        lines = [f"# HELP {NAME} {HELP}", f"# TYPE {NAME} gauge"]
        lines += [f'{NAME}{{target="{_esc(t)}",probe="{_esc(p)}"}} {v}' for t, p, v in self._values()]
        return ("\n".join(lines) + "\n").encode()


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
