"""The lookup tables of the plug-ins listed in monitor/probes/__init__.py: scenarios and kinds by name.

The machinery names no plug-in: it reads whatever `PLUGINS` holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from monitor.probes import PLUGINS
from monitor.scenario.base import Scenario, TargetKind

_SCENARIOS: dict[str, Scenario] = {scenario.name: scenario for plugin in PLUGINS for scenario in plugin.SCENARIOS}
# Read-only views: every module sees the same tables (a test may add to `_SCENARIOS`).
SCENARIOS: Mapping[str, Scenario] = MappingProxyType(_SCENARIOS)
KINDS: Mapping[str, TargetKind] = MappingProxyType({kind.name: kind for plugin in PLUGINS for kind in plugin.KINDS})


def scenarios_of(kind: str) -> list[Scenario]:
    """The scenarios that probe a target of `kind`, in registry order."""
    return [s for s in SCENARIOS.values() if s.target_kind == kind]


__all__ = ["KINDS", "SCENARIOS", "Scenario", "TargetKind", "scenarios_of"]
