"""The Asgard target kind and the list of its scenarios (this plug-in's registry line points here)."""

from __future__ import annotations

from monitor.probes.asgard.alerts import ALERTS
from monitor.probes.asgard.scenario import ASGARD, DEPENDENCIES
from monitor.scenario.base import StandaloneTarget, TargetKind
from monitor.scenario.contract import Component

KIND = TargetKind(
    name="asgard",
    description="the Asgard MLOps API",
    credential_env=("ASGARD_USERNAME", "ASGARD_PASSWORD", "ASGARD_TOKEN"),
    standalone=StandaloneTarget("asgard", "ASGARD_URL", "http://localhost:8000", only_when_set=True),
    server_component="asgard",
    components=(Component("asgard", "the Asgard MLOps API"),),
    dependencies=DEPENDENCIES,
    alerts=ALERTS,
)

KINDS = (KIND,)
SCENARIOS = (ASGARD,)
