"""The `http` target kind (generic: it knows no service) and its one scenario, `http`."""

from __future__ import annotations

from monitor.probes.http.scenario import CHECK
from monitor.scenario.base import TargetKind

KIND = TargetKind(name="http", description="any HTTP service, checked by steps written in the config")

KINDS = (KIND,)
SCENARIOS = (CHECK,)
