"""Scenario registry: one module per monitored service (a plug-in), found by name here.

A plug-in module defines `SCENARIOS` (a tuple of Scenario) and, when it brings a new kind
of target, `KINDS` (a tuple of TargetKind). Adding one is one new module plus its name in
`PLUGINS`; nothing else in the package names a scenario or a kind.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

from monitor.probes.base import Scenario, TargetKind

PLUGINS = ("mlflow", "mlflow_registry", "asgard")

_MODULES = tuple(importlib.import_module(f"{__name__}.{name}") for name in PLUGINS)
SCENARIOS: Mapping[str, Scenario] = MappingProxyType(
    {scenario.name: scenario for module in _MODULES for scenario in module.SCENARIOS}
)
KINDS: Mapping[str, TargetKind] = MappingProxyType(
    {kind.name: kind for module in _MODULES for kind in getattr(module, "KINDS", ())}
)


def scenarios_of(kind: str) -> list[Scenario]:
    """The scenarios that probe a target of `kind`, in registry order."""
    return [s for s in SCENARIOS.values() if s.target_kind == kind]


__all__ = ["KINDS", "PLUGINS", "SCENARIOS", "Scenario", "TargetKind", "scenarios_of"]
