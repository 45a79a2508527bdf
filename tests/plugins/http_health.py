"""Example plug-in: another kind of target (`health`), a plain HTTP service with a health endpoint.

It is written as a file of monitor/probes/ would be: tests/test_plugin_scenario.py drops it
into a copy of the package as monitor/probes/http_health.py, adds "http_health" to the
registry's PLUGINS line, and checks that config loading, default probes, `check`, the
daemon, its metrics and the diagnosis all work for it with nothing else changed. It
declares nothing but its name: it gets the generic components (`server`, ...) and alerts.
(Its kind is `health`, not `http`: that one is the real config-defined kind.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge
from pydantic import Field

from monitor.results import Facts, ProbeResult
from monitor.scenario.base import DefaultProbe, MetricFamilies, Scenario, ScenarioOptions, ScenarioRun, TargetKind


class HealthOptions(ScenarioOptions):
    path: str = "/health"
    expect_status: int = Field(default=200, ge=100, le=599)


@dataclass(frozen=True)
class HealthFacts(Facts):
    body_bytes: int | None = None  # size of the last health answer


class HealthGauges(MetricFamilies):
    """synthetic_http_health_body_bytes{target}: the size of the last health answer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.body_bytes = Gauge(
            "synthetic_http_health_body_bytes", "Size of the last health answer.", ["target"], registry=registry
        )

    def observe(self, result: ProbeResult) -> None:
        size = getattr(result.facts, "body_bytes", None)
        if size is not None:
            self.body_bytes.labels(result.target).set(size)

    def forget(self, target: str, probe: str, *, last_of_target: bool) -> None:
        if last_of_target:
            try:
                self.body_bytes.remove(target)
            except KeyError:
                pass


async def run_health(run: ScenarioRun, options: HealthOptions) -> None:
    async with run.step("health") as step:
        answer = await step.request("GET", options.path, expect={options.expect_status}, headers={"Accept": "*/*"})
        run.facts = dataclasses.replace(run.facts, body_bytes=len(answer.body))


KINDS = (TargetKind("health", description="any HTTP service with a health endpoint"),)
SCENARIOS = (
    Scenario(
        name="http_health",
        target_kind="health",
        steps=("health",),
        options_model=HealthOptions,
        run=run_health,
        description="GET a health endpoint and expect a status",
        default_probe=DefaultProbe("health", "30s", "10s"),
        metric_families=HealthGauges,
        facts_model=HealthFacts,
    ),
)
