"""The lookup tables of the plug-ins listed in monitor/probes/__init__.py: scenarios and kinds by name.

The machinery names no plug-in: it reads whatever `PLUGINS` holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from monitor.probes import PLUGINS
from monitor.scenario.base import Scenario, TargetKind
from monitor.scenario.contract import KindAlert

_SCENARIOS: dict[str, Scenario] = {scenario.name: scenario for plugin in PLUGINS for scenario in plugin.SCENARIOS}
# Read-only views: every module sees the same tables (a test may add to `_SCENARIOS`).
SCENARIOS: Mapping[str, Scenario] = MappingProxyType(_SCENARIOS)
KINDS: Mapping[str, TargetKind] = MappingProxyType({kind.name: kind for plugin in PLUGINS for kind in plugin.KINDS})


# Every alert a kind declares, by name (names are unique across kinds).
KIND_ALERTS: Mapping[str, KindAlert] = MappingProxyType({a.name: a for k in KINDS.values() for a in k.alerts})
_EVERY_KIND = tuple(a for a in KIND_ALERTS.values() if a.every_kind)


def alerts_of(scenario: str) -> tuple[KindAlert, ...]:
    """The declared alerts a run of `scenario` is judged on: its kind's, then the ones every kind gets."""
    found = _SCENARIOS.get(scenario)
    kind = KINDS.get(found.target_kind) if found is not None else None
    own = tuple(a for a in kind.alerts if not a.every_kind) if kind is not None else ()
    return _EVERY_KIND + own


def scenarios_of(kind: str) -> list[Scenario]:
    """The scenarios that probe a target of `kind`, in registry order."""
    return [s for s in SCENARIOS.values() if s.target_kind == kind]


__all__ = ["KIND_ALERTS", "KINDS", "SCENARIOS", "Scenario", "TargetKind", "alerts_of", "scenarios_of"]
