"""Scenario registry: one module per monitored service, one Scenario object per scenario.

Adding a scenario is one new module plus one line here.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from monitor.probes import asgard, mlflow, mlflow_registry
from monitor.probes.base import Scenario

SCENARIOS: Mapping[str, Scenario] = MappingProxyType(
    {scenario.name: scenario for scenario in (mlflow.READ, mlflow.WRITE, mlflow_registry.REGISTRY, asgard.ASGARD)}
)

__all__ = ["SCENARIOS", "Scenario"]
