"""Asgard MLOps API scenario: status (with dependency flags), model list, one model.

Asgard is internal and its payload is not public, so parsing is tolerant: the model
list may be a bare array or an object holding one, and the status field names are
configurable. A dependency flag that is false fails the `status` step with
`dependency_unavailable`; the flags and counts are kept as facts for the metrics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Gauge
from pydantic import Field

from monitor.http.client import redact_url
from monitor.probes.asgard.crosscheck import MLFLOW_DOWN, cross_check
from monitor.results import Dependency, Facts, ProbeResult, Reason
from monitor.scenario.base import (
    DefaultProbe,
    MetricFamilies,
    Scenario,
    ScenarioOptions,
    ScenarioRun,
    Step,
)

LIST_KEYS = ("models", "items", "data", "results", "registered_models")
DEPENDENCIES = ("mlflow", "feast")
INVENTORY = ("registered_models", "active_experiments", "feature_views")


@dataclass(frozen=True)
class AsgardFacts(Facts):
    """What a run learnt from Asgard (None: not learnt, e.g. the status step never answered)."""

    dependencies: dict[str, bool] | None = None  # of DEPENDENCIES, as Asgard reports them
    inventory: dict[str, int] | None = None  # of INVENTORY
    mlflow_tracking_uri: str | None = None  # without credentials
    unavailable: tuple[str, ...] | None = None  # the dependencies reported down
    models_listed: int | None = None
    crosscheck: str | None = None  # the cross-check's verdict (asgard_crosscheck.py)

    def dependency_states(self) -> dict[str, Dependency]:
        """As Asgard reports them; `mlflow` down is explained when MLflow itself is down
        (the cross-check): its own probe's alert covers it."""
        states = {d: Dependency.UP if up else Dependency.DOWN for d, up in (self.dependencies or {}).items()}
        for d in self.unavailable or ():
            states[d] = Dependency.DOWN
        if self.unavailable:  # the flags the step reported down are the whole list
            states = {d: s for d, s in states.items() if s is Dependency.UP or d in self.unavailable}
        if self.crosscheck == MLFLOW_DOWN and states.get("mlflow") is Dependency.DOWN:
            states["mlflow"] = Dependency.EXPLAINED
        return states


def _learnt(run: ScenarioRun, **facts: Any) -> None:
    current = run.facts if isinstance(run.facts, AsgardFacts) else AsgardFacts()
    run.facts = dataclasses.replace(current, **facts)


class StatusFields(ScenarioOptions):
    """Where each value lives in the /mlops/status payload (defaults: the known contract)."""

    mlflow_tracking_uri: str = "mlflow_tracking_uri"
    mlflow_available: str = "mlflow_available"
    feast_available: str = "feast_available"
    registered_models: str = "registered_models"
    active_experiments: str = "active_experiments"
    feature_views: str = "feature_views"


class InferenceOptions(ScenarioOptions):
    enabled: bool = False
    path: str = "/mlops/inference"
    payload: dict[str, Any] = Field(default_factory=dict)
    expect_status: int = Field(default=200, ge=100, le=599)
    expect_field: str | None = "predictions"


class AsgardOptions(ScenarioOptions):
    base_path: str = "/mlops"
    model_name: str | None = None
    models_key: str | None = None
    model_name_field: str = "name"
    fields: StatusFields = StatusFields()
    mlflow_target: str | None = Field(
        default=None, description="the MLflow target Asgard depends on, for the cross-check (default: the only one)"
    )
    inference: InferenceOptions = InferenceOptions()


async def run_asgard(run: ScenarioRun, options: AsgardOptions) -> None:
    base = options.base_path.rstrip("/")
    async with run.step("status") as step:
        status = (await step.request("GET", f"{base}/status")).json_object()
        _read_status(run, step, status, options.fields)
    async with run.step("models_list") as step:
        models = _model_list(step, (await step.request("GET", f"{base}/models")).json(), options.models_key)
        names = [n for n in (_model_name(m, options.model_name_field) for m in models) if n]
        _learnt(run, models_listed=len(models))
    async with run.step("model_get") as step:
        name = options.model_name or (names[0] if names else None)
        if name is None:
            step.skip("Asgard lists no models and no model_name is configured")
        else:
            model = (await step.request("GET", f"{base}/models/{quote(name, safe='')}")).json()
            got = _model_name(model, options.model_name_field) if isinstance(model, (dict, str)) else None
            if not isinstance(model, dict):
                step.fail(
                    Reason.INVALID_RESPONSE, f"model {name!r}: expected a JSON object, got {type(model).__name__}"
                )
            if got is not None and got != name:
                step.fail(Reason.VALIDATION_FAILED, f"asked for model {name!r}, Asgard answered with {got!r}")
    if options.inference.enabled:
        async with run.step("inference") as step:
            inference = options.inference
            payload = dict(inference.payload)
            if name and "model" not in payload:
                payload["model"] = name
            answer = await step.request("POST", inference.path, json_body=payload, expect={inference.expect_status})
            if inference.expect_field:
                body = answer.json_object()
                if inference.expect_field not in body:
                    step.fail(Reason.VALIDATION_FAILED, f"inference answer lacks the field {inference.expect_field!r}")


def _read_status(run: ScenarioRun, step: Step, status: dict[str, Any], fields: StatusFields) -> None:
    dependencies: dict[str, bool] = {}
    for dependency in DEPENDENCIES:
        key = getattr(fields, f"{dependency}_available")
        if key not in status:
            continue  # optional: an older Asgard may not report it
        value = status[key]
        if not isinstance(value, bool):
            step.fail(Reason.INVALID_RESPONSE, f"status field {key!r} is {value!r}, expected true or false")
        dependencies[dependency] = value
    inventory: dict[str, int] = {}
    for kind in INVENTORY:
        key = getattr(fields, kind)
        value = status.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            inventory[kind] = int(value)
        elif isinstance(value, list):
            inventory[kind] = len(value)  # some versions list the items instead of counting them
    _learnt(run, dependencies=dependencies, inventory=inventory)
    uri = status.get(fields.mlflow_tracking_uri)
    if isinstance(uri, str):
        # Kept for the cross-check (host and port) and /status: never with its credentials.
        _learnt(run, mlflow_tracking_uri=redact_url(uri))
    down = [d for d, up in dependencies.items() if not up]
    if down:
        _learnt(run, unavailable=tuple(down))
        flags = ", ".join(f"{getattr(fields, d + '_available')}=false" for d in down)
        step.fail(Reason.DEPENDENCY_UNAVAILABLE, f"Asgard reports {' and '.join(down)} unavailable ({flags})")


def _model_list(step: Step, data: Any, key: str | None) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        if key is not None:
            value = data.get(key)
            if isinstance(value, list):
                return value
            step.fail(Reason.INVALID_RESPONSE, f"models response has no list under {key!r}")
        for candidate in LIST_KEYS:
            if isinstance(found := data.get(candidate), list):
                return found
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    step.fail(
        Reason.INVALID_RESPONSE, f"models response is neither a list nor an object holding one: {str(data)[:120]}"
    )


def _model_name(model: Any, field: str) -> str | None:
    if isinstance(model, str):
        return model
    if isinstance(model, dict):
        value = model.get(field, model.get("model_name"))
        return str(value) if value is not None else None
    return None


class AsgardGauges(MetricFamilies):
    """synthetic_asgard_dependency_up{target, dependency} and synthetic_asgard_inventory{target, kind}:
    what the last run learnt from Asgard's status. What it did not learn (Asgard
    unreachable, a field missing) is absent, never the last value seen: a stale 1 would
    say "mlflow up" through a whole outage."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.dependency_up = Gauge(
            "synthetic_asgard_dependency_up",
            "Asgard's own view of its dependencies (1 up, 0 down).",
            ["target", "dependency"],
            registry=registry,
        )
        self.inventory = Gauge(
            "synthetic_asgard_inventory", "Counts Asgard reports.", ["target", "kind"], registry=registry
        )

    def observe(self, result: ProbeResult) -> None:
        target = result.target
        facts = result.facts if isinstance(result.facts, AsgardFacts) else AsgardFacts()
        reported = facts.dependencies or {}
        for dependency in DEPENDENCIES:
            up = reported.get(dependency)
            if isinstance(up, bool):
                self.dependency_up.labels(target, dependency).set(1 if up else 0)
            else:
                _remove(self.dependency_up, target, dependency)
        counts = facts.inventory or {}
        for kind in INVENTORY:
            value = counts.get(kind)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.inventory.labels(target, kind).set(value)
            else:
                _remove(self.inventory, target, kind)

    def forget(self, target: str, probe: str, *, last_of_target: bool) -> None:
        if not last_of_target:
            return
        for dependency in DEPENDENCIES:
            _remove(self.dependency_up, target, dependency)
        for kind in INVENTORY:
            _remove(self.inventory, target, kind)


def _remove(metric: Gauge, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass


ASGARD = Scenario(
    name="asgard",
    target_kind="asgard",
    steps=("status", "models_list", "model_get", "inference"),
    options_model=AsgardOptions,
    run=run_asgard,
    description="Asgard MLOps API: status with dependency flags, model list, one model",
    optional_steps=lambda options: () if options.inference.enabled else ("inference",),
    default_probe=DefaultProbe("api", "30s", "10s"),
    metric_families=AsgardGauges,
    correlate=cross_check,
    facts_model=AsgardFacts,
)
