"""Correlate an Asgard result with the direct MLflow probes of the same daemon.

Asgard saying "MLflow unavailable" means two different things depending on MLflow
itself: if the direct MLflow probe passes, the Asgard-to-MLflow link is broken (an
Asgard problem, page Asgard's owners); if it fails too, MLflow is the root cause and
the Asgard result is marked so alerting can page on the cause only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from monitor.probes.mlflow.kind import KIND as MLFLOW_KIND
from monitor.probes.mlflow.read import READ
from monitor.probes.mlflow.write import WRITE
from monitor.results import Dependency, Diagnosis, ProbeResult
from monitor.scenario.base import ConfigView

# The direct probes of MLflow whose verdict explains Asgard's (the registry probe is not one:
# it can fail on the registry alone while runs work).
MLFLOW_SCENARIOS = (READ.name, WRITE.name)
MAX_AGE_SECONDS = 600.0
LINK_BROKEN = "asgard_mlflow_link_broken"
MLFLOW_DOWN = "mlflow_down"


def needs_cross_check(result: ProbeResult) -> bool:
    """An Asgard result reporting MLflow down: the only kind the cross-check changes."""
    return result.facts.dependency_states().get("mlflow") in (Dependency.DOWN, Dependency.EXPLAINED)


def cross_check(
    result: ProbeResult, config: ConfigView, latest: Mapping[str, ProbeResult], now: float | None = None
) -> ProbeResult:
    if not needs_cross_check(result):
        return result
    now = time.time() if now is None else now
    mlflow_target = _mlflow_target(result, config)
    if mlflow_target is None:
        return _annotate(
            result,
            None,
            "no-direct-probe",
            "cross-check: no direct MLflow probe is configured, cannot tell Asgard's link from MLflow",
        )
    direct = [
        r
        for r in latest.values()
        if r.target == mlflow_target and r.scenario in MLFLOW_SCENARIOS and now - r.started_at <= MAX_AGE_SECONDS
    ]
    if not direct:
        return _annotate(
            result,
            None,
            "no-direct-result",
            f"cross-check: no recent result of a direct probe of {mlflow_target!r} yet",
        )
    newest = max(direct, key=lambda r: r.started_at)
    if newest.ok:
        return _annotate(
            result,
            None,
            LINK_BROKEN,
            f"cross-check: the direct MLflow probe {newest.probe!r} passes, so the Asgard-to-MLflow link is broken",
        )
    return _annotate(
        result,
        mlflow_target,
        MLFLOW_DOWN,
        f"cross-check: MLflow itself is failing ({newest.probe!r}: {newest.reason.value if newest.reason else 'failed'}"
        f" at {newest.failed_step.name if newest.failed_step else '?'}); Asgard's failure follows from it",
    )


def _mlflow_target(result: ProbeResult, config: ConfigView) -> str | None:
    probe = next((p for p in config.probes if p.name == result.probe), None)
    pinned = getattr(probe.options, "mlflow_target", None) if probe else None
    mlflow_targets = [t for t in config.targets if t.kind == MLFLOW_KIND.name]
    if pinned:
        return pinned if any(t.name == pinned for t in mlflow_targets) else None
    uri = getattr(result.facts, "mlflow_tracking_uri", None)
    if isinstance(uri, str):
        host = urlsplit(uri).hostname
        for target in mlflow_targets:
            if host and urlsplit(target.url).hostname == host and urlsplit(target.url).port == urlsplit(uri).port:
                return target.name
    probed = {p.target for p in config.probes if p.scenario in MLFLOW_SCENARIOS}
    candidates = [t.name for t in mlflow_targets if t.name in probed]
    return candidates[0] if len(candidates) == 1 else None


def _annotate(result: ProbeResult, root_cause: str | None, verdict: str, text: str) -> ProbeResult:
    steps = tuple(
        dataclasses.replace(step, error=f"{step.error}; {text}") if step.name == "status" and not step.ok else step
        for step in result.steps
    )
    verdict_fact: dict[str, Any] = {"crosscheck": verdict}  # AsgardFacts (asgard.py imports this module)
    diagnosis = result.diagnosis
    if root_cause is not None:
        diagnosis = Diagnosis(
            "mlflow_server", f"MLflow itself is failing ({root_cause}); Asgard's failure follows from it"
        )
    elif verdict == LINK_BROKEN:
        diagnosis = Diagnosis(
            "asgard", "Asgard cannot reach MLflow while the direct MLflow probe passes: Asgard's link"
        )
    return dataclasses.replace(
        result,
        diagnosis=diagnosis,
        steps=steps,
        facts=dataclasses.replace(result.facts, **verdict_fact),
        root_cause=root_cause,
        notes=(*result.notes, text),
    )
