"""One structured log line per probe run, with every step's duration and outcome."""

from __future__ import annotations

from typing import Any

import structlog

from monitor.events import Event, JobEvent
from monitor.results import ProbeResult


class LogSink:
    name = "log"
    takes_monitor_faults = True

    def __init__(self, logger: Any = None) -> None:
        self.log = logger or structlog.get_logger("monitor.probe")
        self.scheduler_log = structlog.get_logger("monitor.scheduler")

    def handle_event(self, event: Event) -> None:
        if isinstance(event, JobEvent):
            self.scheduler_log.warning(
                "scheduler_job_event", probe=event.probe, job_event=event.event, detail=event.detail
            )

    def handle(self, result: ProbeResult) -> None:
        steps = []
        for s in result.steps:
            step: dict[str, Any] = {"name": s.name, "ok": s.ok, "ms": round(s.duration_seconds * 1000, 2)}
            if s.skipped:
                step["skipped"] = True
            if s.reason:
                step["reason"] = s.reason.value
                step["error"] = s.error
            if s.status_code is not None:
                step["status"] = s.status_code
            if s.component:
                step["component"] = s.component
            steps.append(step)
        fields: dict[str, Any] = {
            "probe": result.probe,
            "target": result.target,
            "scenario": result.scenario,
            "ok": result.ok,
            "duration_ms": round(result.duration_seconds * 1000, 2),
            "steps": steps,
        }
        failed = result.failed_step
        if failed is not None:
            fields.update(step=failed.name, reason=failed.reason.value if failed.reason else None, error=failed.error)
        if result.diagnosis is not None:
            fields["diagnosis"] = result.diagnosis.as_dict()
        if result.root_cause:
            fields["root_cause"] = result.root_cause
        if result.notes:
            fields["notes"] = list(result.notes)
        if result.facts:
            fields["facts"] = result.facts.as_dict()
        if result.traceback:
            fields["traceback"] = result.traceback
            self.log.error("probe_internal_error", **fields)
        elif result.ok:
            self.log.info("probe_run", **fields)
        else:
            self.log.warning("probe_run", **fields)
