"""The alert engine's state machine, fed results and times directly (no I/O, no sleeps),
plus the AlertSink around it for the state file and the firing gauge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from prometheus_client import CollectorRegistry

from monitor.alerting.alerts import (
    LATENCY_HIGH,
    MONITOR_STALLED,
    PROBE_FAILING,
    PROBE_TIMEOUT,
    Alert,
    rfc3339,
)
from monitor.alerting.engine import AlertEngine, AlertKey
from monitor.alerting.sink import AlertSink
from monitor.alerting.state import SNAPSHOT_SLICE
from monitor.config import AlertingConfig
from monitor.probes.asgard.alerts import DEPENDENCY_UNAVAILABLE
from monitor.probes.asgard.scenario import AsgardFacts
from monitor.probes.mlflow.alerts import WORKER_FAILURE
from monitor.results import NO_FACTS, Facts, ProbeResult, Reason, StepResult

PROBES = [("mlflow_read", "mlflow"), ("asgard_api", "asgard"), ("mlflow_write", "mlflow")]
T0 = 1_700_000_000.0


def cfg(**kw: Any) -> AlertingConfig:
    base: dict[str, Any] = {"failure_threshold": 2, "success_threshold": 2, "startup_grace": 0, "resend_interval": 60}
    base.update(kw)
    return AlertingConfig.model_validate(base)


# The engine decides per receiver: re-sends (endsAt) go to Alertmanager receivers only.
ALERTMANAGER = {"kind": "alertmanager", "url": "http://127.0.0.1:9093"}


def engine(now: float = T0, probes: list[tuple[str, str]] | None = PROBES, **kw: Any) -> AlertEngine:
    kw.setdefault("receivers", [ALERTMANAGER])
    return AlertEngine(cfg(**kw), now=now, probes=probes)


def run(
    probe: str = "mlflow_read",
    target: str = "mlflow",
    *,
    reason: Reason | None = None,
    error: str | None = None,
    step: str = "experiments_search",
    duration: float = 0.1,
    facts: Facts | None = None,
    root_cause: str | None = None,
    scenario: str = "mlflow_read",
    at: float = T0,
) -> ProbeResult:
    steps = [StepResult("health", True, 0.01)]
    if reason is None:
        steps.append(StepResult(step, True, duration - 0.01))
    else:
        steps.append(StepResult(step, False, duration - 0.01, reason=reason, error=error or f"{reason.value} happened"))
    return ProbeResult(probe, target, scenario, at, duration, tuple(steps), 10.0, facts or NO_FACTS, root_cause)


def fail(**kw: Any) -> ProbeResult:
    kw.setdefault("reason", Reason.HTTP_ERROR)
    return run(**kw)


def asgard(*, mlflow: bool = True, feast: bool = True, root_cause: str | None = None) -> ProbeResult:
    deps = {"mlflow": mlflow, "feast": feast}
    down = [d for d, up in deps.items() if not up]
    facts = AsgardFacts(
        dependencies=deps, unavailable=tuple(down) or None, crosscheck="mlflow_down" if root_cause else None
    )
    return run(
        "asgard_api",
        "asgard",
        scenario="asgard",
        step="status",
        facts=facts,
        root_cause=root_cause,
        reason=Reason.DEPENDENCY_UNAVAILABLE if down else None,
        error=f"Asgard reports {' and '.join(down)} unavailable" if down else None,
    )


def names(alerts: list[Alert]) -> list[tuple[str, str]]:
    return sorted((a.name, a.status) for a in alerts)


def feed(e: AlertEngine, results: list[ProbeResult], start: float = T0, every: float = 30.0) -> list[Alert]:
    out: list[Alert] = []
    for i, r in enumerate(results):
        out += e.observe(r, start + i * every)
    return out


# -- thresholds, grace, resend, resolve, flapping ----------------------------------------


def test_fires_on_the_nth_consecutive_failure_not_before() -> None:
    e = engine(failure_threshold=3)
    assert e.observe(fail(), T0) == []
    assert e.observe(fail(), T0 + 30) == []
    assert e.firing() == []
    fired = e.observe(fail(), T0 + 60)
    assert names(fired) == [(PROBE_FAILING, "firing")]
    alert = fired[0]
    assert alert.labels == {
        "alertname": PROBE_FAILING,
        "target": "mlflow",
        "probe": "mlflow_read",
        "severity": "critical",
    }
    assert alert.starts_at == T0 + 60 and alert.ends_at == T0 + 60 + 4 * 60
    assert e.observe(fail(), T0 + 90) == []  # no second notification while firing
    assert [a.labels["alertname"] for a in e.firing()] == [PROBE_FAILING]


def test_a_pass_breaks_a_pending_streak() -> None:
    e = engine(failure_threshold=2)
    assert feed(e, [fail(), run(), fail(), run(), fail()]) == []
    assert names(e.observe(fail(), T0 + 200)) == [(PROBE_FAILING, "firing")]


def test_startup_grace_holds_firing_then_fires_on_the_next_matching_run() -> None:
    e = engine(startup_grace=60)
    assert e.observe(fail(), T0 + 10) == []
    assert e.observe(fail(), T0 + 20) == []  # count reached, but still in the grace period
    assert e.observe(fail(), T0 + 50) == []
    assert e.firing() == [] and e.due_resends(T0 + 59) == []
    fired = e.observe(fail(), T0 + 61)  # first matching run after the grace
    assert names(fired) == [(PROBE_FAILING, "firing")]
    assert fired[0].starts_at == T0 + 61


def test_grace_does_not_fire_on_a_good_run_after_it() -> None:
    e = engine(startup_grace=60)
    feed(e, [fail(), fail()], start=T0 + 10, every=10)
    assert e.observe(run(), T0 + 70) == []
    assert e.firing() == []


def test_resend_timing_and_ends_at() -> None:
    e = engine(resend_interval=60)
    feed(e, [fail(), fail()])  # fires at T0+30
    assert e.due_resends(T0 + 31) == []
    assert e.due_resends(T0 + 89) == []
    again = e.due_resends(T0 + 90)
    assert names(again) == [(PROBE_FAILING, "firing")]
    assert again[0].starts_at == T0 + 30  # same alert, original startsAt
    assert again[0].ends_at == T0 + 90 + 240  # keeps Alertmanager from expiring it between re-sends
    assert e.due_resends(T0 + 100) == []
    assert len(e.due_resends(T0 + 150)) == 1


def test_resolves_after_success_threshold_good_runs() -> None:
    e = engine(success_threshold=3)
    feed(e, [fail(), fail()])
    assert e.observe(run(), T0 + 100) == []
    assert e.observe(run(), T0 + 130) == []
    assert e.observe(fail(), T0 + 160) == []  # a bad run restarts the count of good ones
    assert e.observe(run(), T0 + 190) == []
    assert e.observe(run(), T0 + 220) == []
    resolved = e.observe(run(), T0 + 250)
    assert names(resolved) == [(PROBE_FAILING, "resolved")]
    assert resolved[0].starts_at == T0 + 30 and resolved[0].ends_at == T0 + 250
    assert e.firing() == [] and e.due_resends(T0 + 1000) == []


def test_flapping_with_threshold_two_never_notifies() -> None:
    e = engine(failure_threshold=2, success_threshold=2)
    assert feed(e, [fail() if i % 2 == 0 else run() for i in range(40)]) == []
    assert e.firing() == []
    # A firing alert that flaps is not resolved and re-fired either.
    feed(e, [fail(), fail()], start=T0 + 5000)
    assert feed(e, [run() if i % 2 == 0 else fail() for i in range(40)], start=T0 + 6000) == []
    assert [a.name for a in e.firing()] == [PROBE_FAILING]


# -- the alert kinds ------------------------------------------------------------------------


def test_timeout_alert_with_step_reason_and_error_in_description() -> None:
    e = engine()
    out = feed(e, [fail(reason=Reason.TIMEOUT, step="runs_get", error="deadline of 10s reached")] * 2)
    assert names(out) == [(PROBE_FAILING, "firing"), (PROBE_TIMEOUT, "firing")]
    timeout = next(a for a in out if a.name == PROBE_TIMEOUT)
    assert timeout.labels["severity"] == "warning"
    description = timeout.annotations["description"]
    assert "runs_get" in description and "timeout" in description and "deadline of 10s reached" in description
    assert timeout.annotations["summary"] == "Probe mlflow_read on mlflow times out"
    # A later failure of another kind resolves the timeout alert but keeps the failing one.
    out = feed(e, [fail(reason=Reason.HTTP_ERROR)] * 2, start=T0 + 100)
    assert names(out) == [(PROBE_TIMEOUT, "resolved")]


def test_worker_failure_alert_is_critical() -> None:
    e = engine()
    out = feed(e, [fail(reason=Reason.WORKER_FAILURE, error="server closed the connection without a response")] * 2)
    assert names(out) == [(WORKER_FAILURE, "firing"), (PROBE_FAILING, "firing")]
    worker = next(a for a in out if a.name == WORKER_FAILURE)
    assert worker.labels["severity"] == "critical"
    assert "closed the connection" in worker.annotations["description"]


def test_latency_alert_on_run_duration_over_threshold() -> None:
    e = engine(latency_threshold=2)
    assert feed(e, [run(duration=1.9)] * 3) == []
    out = feed(e, [run(duration=2.5, step="runs_create")] * 2, start=T0 + 100)
    assert names(out) == [(LATENCY_HIGH, "firing")]  # slow but passing: not a failure
    assert "2.50s (threshold 2s)" in out[0].annotations["description"]
    assert "runs_create" in out[0].annotations["description"]
    assert names(feed(e, [run(duration=0.2)] * 2, start=T0 + 200)) == [(LATENCY_HIGH, "resolved")]


def test_dependency_alert_carries_the_dependency_label() -> None:
    e = engine()
    out = feed(e, [asgard(feast=False)] * 2)
    assert names(out) == [(DEPENDENCY_UNAVAILABLE, "firing"), (PROBE_FAILING, "firing")]
    dep = next(a for a in out if a.name == DEPENDENCY_UNAVAILABLE)
    assert dep.labels == {
        "alertname": DEPENDENCY_UNAVAILABLE,
        "target": "asgard",
        "probe": "asgard_api",
        "severity": "warning",
        "dependency": "feast",
    }
    assert dep.annotations["summary"] == "Asgard reports feast unavailable (asgard)"
    # mlflow going down too (MLflow itself fine: the link is broken) is its own alert.
    out = feed(e, [asgard(feast=False, mlflow=False)] * 2, start=T0 + 100)
    assert [(a.name, a.labels.get("dependency")) for a in out] == [(DEPENDENCY_UNAVAILABLE, "mlflow")]
    out = feed(e, [asgard()] * 2, start=T0 + 200)
    assert sorted((a.labels["alertname"], a.labels.get("dependency"), a.status) for a in out) == [
        (DEPENDENCY_UNAVAILABLE, "feast", "resolved"),
        (DEPENDENCY_UNAVAILABLE, "mlflow", "resolved"),
        (PROBE_FAILING, None, "resolved"),
    ]


def test_root_cause_suppresses_the_asgard_alerts_and_pages_on_mlflow() -> None:
    e = engine()
    out: list[Alert] = []
    for i in range(5):  # MLflow is down: both probes fail, the cross-check marks Asgard
        out += e.observe(fail(reason=Reason.UNREACHABLE), T0 + i * 30)
        out += e.observe(asgard(mlflow=False, root_cause="mlflow"), T0 + i * 30 + 1)
    assert [(a.name, a.labels["probe"]) for a in out] == [(PROBE_FAILING, "mlflow_read")]
    assert {a.labels["probe"] for a in e.firing()} == {"mlflow_read"}


def test_root_cause_neither_raises_nor_resets_an_already_firing_asgard_alert() -> None:
    e = engine()
    out = feed(e, [asgard(mlflow=False)] * 2)  # the link is broken: Asgard's own alerts
    assert names(out) == [(DEPENDENCY_UNAVAILABLE, "firing"), (PROBE_FAILING, "firing")]
    # Then MLflow itself goes down: neutral runs, no resolve and no re-fire.
    assert feed(e, [asgard(mlflow=False, root_cause="mlflow")] * 6, start=T0 + 100) == []
    assert len(e.firing()) == 2
    out = feed(e, [asgard()] * 2, start=T0 + 400)
    assert names(out) == [(DEPENDENCY_UNAVAILABLE, "resolved"), (PROBE_FAILING, "resolved")]


def test_stall_alert_from_job_events_resolved_by_runs() -> None:
    e = engine()
    assert e.job_event("mlflow_write", "missed", T0) == []
    out = e.job_event("mlflow_write", "skipped", T0 + 300)
    assert names(out) == [(MONITOR_STALLED, "firing")]
    assert out[0].labels == {
        "alertname": MONITOR_STALLED,
        "target": "mlflow",
        "probe": "mlflow_write",
        "severity": "warning",
    }
    assert "'skipped'" in out[0].annotations["description"]
    assert e.job_event("unknown_probe", "error", T0) == []  # not configured
    assert e.observe(run("mlflow_write", scenario="mlflow_write"), T0 + 600) == []
    out = e.observe(run("mlflow_write", scenario="mlflow_write"), T0 + 900)
    assert names(out) == [(MONITOR_STALLED, "resolved")]


def test_a_run_between_job_events_breaks_the_stall_streak() -> None:
    e = engine()
    e.job_event("mlflow_read", "missed", T0)
    e.observe(fail(), T0 + 1)  # failed, but it ran: the scheduler is not stalled
    assert e.job_event("mlflow_read", "missed", T0 + 30) == []


def test_extra_labels_runbook_and_generator_url() -> None:
    e = engine(
        labels={"cluster": "prod-eu", "namespace": "mlops"},
        runbook_url="https://runbooks.example.internal/synthetic-monitor",
        generator_url="http://monitor.mlops.svc:9356/status",
    )
    alert = feed(e, [fail(reason=Reason.WORKER_FAILURE)] * 2)[0]
    assert alert.labels["cluster"] == "prod-eu" and alert.labels["namespace"] == "mlops"
    assert (
        alert.annotations["runbook_url"] == f"https://runbooks.example.internal/synthetic-monitor#{alert.name.lower()}"
    )
    assert alert.generator_url == "http://monitor.mlops.svc:9356/status"
    assert alert.as_alertmanager()["generatorURL"] == "http://monitor.mlops.svc:9356/status"
    plain = feed(engine(), [fail()] * 2)[0]
    assert "runbook_url" not in plain.annotations and plain.generator_url == ""


def test_extra_labels_cannot_shadow_engine_labels() -> None:
    with pytest.raises(ValueError, match="set by the alert engine"):
        cfg(labels={"severity": "info"})


def test_description_is_short_and_has_no_userinfo() -> None:
    e = engine()
    error = "GET http://probe:s3cr3t@mlflow:5000/health failed\n" + "x" * 2000
    alert = feed(e, [fail(error=error)] * 2)[0]
    description = alert.annotations["description"]
    assert "s3cr3t" not in description and "\n" not in description
    assert len(description) < 600


def test_results_of_unconfigured_probes_are_ignored() -> None:
    e = engine()
    assert feed(e, [fail(probe="gone")] * 5) == []
    assert feed(e, [fail(target="other")] * 5) == []  # probe moved to another target


def test_reconfigure_resolves_alerts_of_removed_probes() -> None:
    e = engine()
    feed(e, [fail()] * 2)
    feed(e, [asgard(feast=False)] * 2)
    out = e.reconfigure(cfg(), [("asgard_api", "asgard")], T0 + 500)
    assert [(a.labels["probe"], a.status) for a in out] == [("mlflow_read", "resolved")]
    assert {a.labels["probe"] for a in e.firing()} == {"asgard_api"}


def test_rfc3339_format() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_700_000_000.5) == "2023-11-14T22:13:20.500Z"


# -- restart with saved state ---------------------------------------------------------------


def fired_engine() -> tuple[AlertEngine, dict[str, Any]]:
    e = engine()
    feed(e, [fail()] * 2)  # SyntheticProbeFailing fires at T0+30
    e.observe(fail(probe="mlflow_write", scenario="mlflow_write"), T0 + 40)  # one pending count
    return e, json.loads(json.dumps(e.snapshot(T0 + 50)))  # through JSON, as on disk


def test_restart_keeps_firing_alerts_without_a_new_fire() -> None:
    _, saved = fired_engine()
    e = engine(now=T0 + 70)
    assert e.restore(saved, T0 + 70) == []  # nothing resolved
    assert [a.name for a in e.firing()] == [PROBE_FAILING]
    again = e.due_resends(T0 + 70)  # re-sent at once: the same alert, original startsAt
    assert names(again) == [(PROBE_FAILING, "firing")] and again[0].starts_at == T0 + 30
    assert e.observe(fail(), T0 + 80) == []  # still failing: no duplicate "new" fire
    # The pending counter survived too: one more failure of mlflow_write fires it.
    assert names(e.observe(fail(probe="mlflow_write", scenario="mlflow_write"), T0 + 90)) == [(PROBE_FAILING, "firing")]
    assert names(feed(e, [run()] * 2, start=T0 + 100)) == [(PROBE_FAILING, "resolved")]


def test_restart_with_stale_state_resolves_it() -> None:
    _, saved = fired_engine()
    later = T0 + 50 + 10 * 60 + 1  # older than 10 x resend_interval
    e = engine(now=later)
    out = e.restore(saved, later)
    assert names(out) == [(PROBE_FAILING, "resolved")]
    assert out[0].starts_at == T0 + 30 and out[0].ends_at == later
    assert e.firing() == [] and e.due_resends(later) == []
    assert e.observe(fail(probe="mlflow_write", scenario="mlflow_write"), later) == []  # counters dropped too


def test_restart_resolves_alerts_of_a_probe_no_longer_configured() -> None:
    _, saved = fired_engine()
    e = engine(now=T0 + 70, probes=[("asgard_api", "asgard")])
    assert [(a.labels["probe"], a.status) for a in e.restore(saved, T0 + 70)] == [("mlflow_read", "resolved")]
    assert e.firing() == []


def test_restore_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        engine().restore({"format": 99}, T0)


# -- the sink around the engine: state file and gauge -----------------------------------


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def firing_gauge(registry: CollectorRegistry, name: str, probe: str, target: str = "mlflow") -> float | None:
    return registry.get_sample_value(
        "synthetic_monitor_alerts_firing", {"alertname": name, "target": target, "probe": probe}
    )


async def test_sink_state_file_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state" / "alerts.json"
    config = cfg(state_file=str(state))
    clock = Clock()
    registry = CollectorRegistry()
    sink = AlertSink(config, registry, clock=clock)
    await sink.start(PROBES)
    sink.handle(fail())
    clock.now += 30
    sink.handle(fail())
    assert firing_gauge(registry, PROBE_FAILING, "mlflow_read") == 1
    await sink.flush_state()  # written off the loop, coalesced: wait for it
    saved = json.loads(state.read_text())
    assert [s["alertname"] for s in saved["states"] if s["starts_at"]] == [PROBE_FAILING]
    assert not list(state.parent.glob(".*.tmp"))  # written atomically, no temp left behind
    await sink.stop()

    clock.now += 20
    registry2 = CollectorRegistry()
    sink2 = AlertSink(config, registry2, clock=clock)
    await sink2.start(PROBES)
    assert [(a.name, a.starts_at) for a in sink2.firing()] == [(PROBE_FAILING, T0 + 30)]
    assert firing_gauge(registry2, PROBE_FAILING, "mlflow_read") == 1
    clock.now += 30
    sink2.handle(run())
    clock.now += 30
    sink2.handle(run())
    assert sink2.firing() == []
    assert firing_gauge(registry2, PROBE_FAILING, "mlflow_read") is None  # series removed when resolved
    await sink2.stop()
    assert all(s["starts_at"] is None for s in json.loads(state.read_text())["states"])


async def test_sink_survives_a_corrupt_state_file(tmp_path: Path) -> None:
    state = tmp_path / "alerts.json"
    state.write_text("{not json")
    sink = AlertSink(cfg(state_file=str(state)), CollectorRegistry(), clock=Clock())
    await sink.start(PROBES)
    assert sink.firing() == []
    await sink.stop()
    assert json.loads(state.read_text())["format"] == 1  # replaced by a good one


async def test_sink_reload_resolves_removed_probes_and_clears_the_gauge() -> None:
    registry = CollectorRegistry()
    sink = AlertSink(cfg(), registry, clock=Clock())
    await sink.start(PROBES)
    sink.handle(fail())
    sink.handle(fail())
    assert firing_gauge(registry, PROBE_FAILING, "mlflow_read") == 1
    sink.reconfigure(cfg(), [("asgard_api", "asgard")])
    assert sink.firing() == []
    assert firing_gauge(registry, PROBE_FAILING, "mlflow_read") is None
    await sink.stop()


async def test_disabled_sink_is_a_no_op() -> None:
    registry = CollectorRegistry()
    sink = AlertSink(cfg(enabled=False), registry, clock=Clock())
    await sink.start(PROBES)
    for _ in range(5):
        sink.handle(fail())
        sink.job_event("mlflow_read", "error")
    assert sink.firing() == []
    assert firing_gauge(registry, PROBE_FAILING, "mlflow_read") is None
    await sink.stop()


def test_handle_never_raises() -> None:
    registry = CollectorRegistry()
    sink = AlertSink(cfg(), registry, clock=Clock())
    with structlog.testing.capture_logs() as logs:
        sink.handle(None)  # type: ignore[arg-type]  # a bug upstream is logged, not raised
    (entry,) = logs
    assert entry["event"] == "alert_sink_failed" and entry["log_level"] == "error"
    assert entry["probe"] is None and entry["exc_info"] is True  # logged with its traceback
    # ... and counted, so broken alerting is visible on /metrics, not only in a log line.
    assert registry.get_sample_value("synthetic_monitor_sink_errors_total", {"sink": "alerting"}) == 1


def test_a_tick_with_nothing_due_sorts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-send scan runs every tick; in a wide outage it sorted all 3,000 firing states
    each time (dataclass comparisons were in the loop's profile). Only what is due is sorted."""
    eng = engine(probes=None)
    for i in range(50):
        eng.observe(fail(probe=f"p{i:02d}"), T0)
        eng.observe(fail(probe=f"p{i:02d}"), T0 + 30)
    assert len(eng.firing()) == 50
    first = eng.due_resends(T0 + 31)  # the first tick: webhooks' first notices, nothing else
    compared = []
    real = AlertKey.__lt__
    monkeypatch.setattr(AlertKey, "__lt__", lambda a, b: compared.append(1) or real(a, b))
    assert eng.due_resends(T0 + 32) == [] and compared == []  # nothing due: no comparison at all
    due = eng.due_resends(T0 + 30 + 61)  # resend_interval 60: everything due, in key order
    assert [a.labels["probe"] for a in due] == sorted(a.labels["probe"] for a in due)
    assert len(due) == 50 and first == []


def test_the_state_snapshot_and_the_firing_list_sort_without_dataclass_comparisons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The state file's snapshot runs on the loop, every second while alerts fire in a wide
    outage: sorting 3,000 keys through the dataclass's `<` took 18 ms of it. Same key order,
    through plain tuples."""
    eng = engine(probes=None)
    for i in (7, 3, 9, 1, 5, 0, 8, 2, 6, 4):  # fired out of key order, as in an outage
        eng.observe(fail(probe=f"p{i}"), T0)
        eng.observe(fail(probe=f"p{i}"), T0 + 30)
    compared = []
    real = AlertKey.__lt__
    monkeypatch.setattr(AlertKey, "__lt__", lambda a, b: compared.append(1) or real(a, b))
    states = eng.snapshot(T0 + 31)["states"]
    firing = eng.firing()
    assert compared == []
    keys = [(s["alertname"], s["target"], s["probe"], s["dependency"]) for s in states]
    assert len(keys) == 10 and keys == sorted(keys)
    assert [a.labels["probe"] for a in firing] == [f"p{i}" for i in range(10)]


def test_the_state_snapshot_comes_in_slices_that_give_the_loop_back() -> None:
    """In a fleet's wide outage one pass over 3,000 firing states held the event loop
    15-40 ms (130 ms at worst) every second. The snapshot pauses every SNAPSHOT_SLICE
    states; run to its end it is the very snapshot."""
    eng = engine(probes=None)
    for i in range(600):
        eng.observe(fail(probe=f"p{i:03d}"), T0)
        eng.observe(fail(probe=f"p{i:03d}"), T0 + 30)
    steps = eng.snapshot_steps(T0 + 31)
    pauses = 0
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            sliced = stop.value
            break
        pauses += 1
    assert pauses == (600 - 1) // SNAPSHOT_SLICE
    assert sliced == eng.snapshot(T0 + 31) and len(sliced["states"]) == 600
