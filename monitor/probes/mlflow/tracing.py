"""The MLflow tracing path (opt-in): one small probe trace in through OTLP, read back, deleted.

GenAI applications send their traces to MLflow's OTLP/HTTP ingest (`POST /v1/traces` with
`x-mlflow-experiment-id`). The probe exports one trace of two spans in OTLP's JSON
encoding (no OpenTelemetry SDK needed), reads it back through MLflow's trace REST API,
compares span names and the attributes naming the probe and the run, and deletes it. The
time from the export to the first successful read is `trace_visible_seconds`.

MLflow serves OTLP only from its FastAPI app (uvicorn, the default); under gunicorn
(`--gunicorn-opts`) the route answers 404. That is a configuration finding (`config`,
naming the server type), not an outage.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import datetime
from typing import Any

from pydantic import Field

from monitor.http.client import TargetClient, check_status
from monitor.probes.mlflow.api import (
    MEMBER_TAG,
    PROBE_TAG,
    MlflowFacts,
    experiment_get_or_create,
    learnt,
    sweep_leftovers,
)
from monitor.probes.mlflow.explain import explain as explain_common
from monitor.probes.mlflow.gauges import MlflowStoreGauges
from monitor.results import Diagnosis, Reason
from monitor.scenario.base import Scenario, ScenarioOptions, ScenarioRun, Step

OTLP_PATH = "/v1/traces"
TRACES_API = "/api/3.0/mlflow/traces"
EXPERIMENT_HEADER = "x-mlflow-experiment-id"
RUN_ATTRIBUTE = "synthetic_monitor.run"
ROOT_SPAN, CHILD_SPAN = "synthetic-monitor-probe", "synthetic-monitor-child"
READ_POLL_SECONDS = 0.1
SERVICE_NAME = "synthetic-monitor"  # the resource's service.name: MLflow keeps it as a trace tag
TRACE_LEFTOVER = "trace:"  # leftovers "trace:<experiment id>:<trace id>" (see api.sweep_leftovers)


class TracingOptions(ScenarioOptions):
    experiment_name: str = Field(default="synthetic-monitor-traces", min_length=1)


def otlp_payload(
    trace_hex: str, root_hex: str, child_hex: str, probe: str, token: str, member: str = ""
) -> dict[str, Any]:
    """ExportTraceServiceRequest in OTLP's JSON encoding (hex ids, lowerCamelCase, nanos as strings)."""
    now = time.time_ns()

    def attrs(**values: str) -> list[dict[str, Any]]:
        return [{"key": k, "value": {"stringValue": v}} for k, v in values.items()]

    labels = {PROBE_TAG: probe, RUN_ATTRIBUTE: token, "synthetic_monitor.synthetic": "true"}
    if member:
        labels[MEMBER_TAG] = member
    span = {"traceId": trace_hex, "kind": 1, "status": {"code": 1}}
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": attrs(**{"service.name": SERVICE_NAME})},
                "scopeSpans": [
                    {
                        "scope": {"name": "synthetic-monitor"},
                        "spans": [
                            {
                                **span,
                                "spanId": root_hex,
                                "name": ROOT_SPAN,
                                "startTimeUnixNano": str(now - 2_000_000),
                                "endTimeUnixNano": str(now),
                                "attributes": attrs(**labels),
                            },
                            {
                                **span,
                                "spanId": child_hex,
                                "parentSpanId": root_hex,
                                "name": CHILD_SPAN,
                                "startTimeUnixNano": str(now - 1_000_000),
                                "endTimeUnixNano": str(now - 500_000),
                                "attributes": attrs(**labels),
                            },
                        ],
                    }
                ],
            }
        ]
    }


async def run_tracing(run: ScenarioRun, options: TracingOptions) -> None:
    async with run.step("experiment_get_or_create") as step:
        experiment_id = await experiment_get_or_create(step, options.experiment_name)
    probe = run.probe_name or "probe"
    trace_hex, root_hex, child_hex = secrets.token_hex(16), secrets.token_hex(8), secrets.token_hex(8)
    token = secrets.token_hex(8)
    trace_id = f"tr-{trace_hex}"  # MLflow's id for an OTLP trace
    learnt(run, probe_trace=f"{TRACE_LEFTOVER}{experiment_id}:{trace_id}")
    exported = False
    try:
        async with run.step("trace_export") as step:
            exported = True  # from here the server may hold the trace, whatever we hear back
            sent_at = run.clock()
            response = await step.request(
                "POST",
                OTLP_PATH,
                json_body=otlp_payload(trace_hex, root_hex, child_hex, probe, token, run.member),
                headers={EXPERIMENT_HEADER: experiment_id},
                expect={200, 404},
            )
            if response.status_code == 404:
                server = response.headers.get("server", "unknown")
                step.fail(
                    Reason.HTTP_ERROR,
                    f"POST {OTLP_PATH}: HTTP 404 from a server that says 'Server: {server}': MLflow serves OTLP"
                    " ingest only from its FastAPI app (uvicorn); a gunicorn-served MLflow has no such route",
                )
        async with run.step("trace_get") as step:
            spans = await _read_back(run, step, trace_id)
            learnt(run, trace_visible_seconds=round(run.clock() - sent_at, 6))
            _compare(step, spans, probe, token)
    finally:
        if exported:
            async with run.step("trace_delete", cleanup=True) as step:
                await _delete(step, experiment_id, trace_id)


async def _read_back(run: ScenarioRun, step: Step, trace_id: str) -> list[dict[str, Any]]:
    """GET traces/get until the trace is there (404 while ingest is still writing)."""
    while True:
        found = await step.request("GET", f"{TRACES_API}/get", params={"trace_id": trace_id}, expect={200, 404})
        if found.status_code == 200:
            trace = found.json_object().get("trace")
            spans = trace.get("spans") if isinstance(trace, dict) else None
            if not isinstance(spans, list):
                step.fail(Reason.INVALID_RESPONSE, "traces/get: the answer lacks trace.spans")
            return [s for s in spans if isinstance(s, dict)]
        if run.time_left() <= READ_POLL_SECONDS:
            step.fail(Reason.VALIDATION_FAILED, f"trace {trace_id} was ingested but is not readable by the deadline")
        await asyncio.sleep(READ_POLL_SECONDS)


def _compare(step: Step, spans: list[dict[str, Any]], probe: str, token: str) -> None:
    names = sorted(str(s.get("name")) for s in spans)
    problems = []
    if names != sorted((ROOT_SPAN, CHILD_SPAN)):
        problems.append(f"span names are {names}, sent {[CHILD_SPAN, ROOT_SPAN]}")
    for span in spans:
        got = span_attributes(span)
        if got.get(PROBE_TAG) != probe or got.get(RUN_ATTRIBUTE) != token:
            problems.append(
                f"span {span.get('name')!r} carries probe={got.get(PROBE_TAG)!r} run={got.get(RUN_ATTRIBUTE)!r},"
                f" sent probe={probe!r} run={token!r}"
            )
    if problems:
        step.fail(Reason.VALIDATION_FAILED, "trace read-back mismatch: " + "; ".join(problems))


def span_attributes(span: dict[str, Any]) -> dict[str, Any]:
    """A span's attributes as plain values: OTLP's [{key, value: {string_value}}] list, whose
    strings MLflow stores JSON-encoded ('"x"'), or a plain mapping."""
    raw = span.get("attributes")
    out: dict[str, Any] = {}
    items = (
        raw.items()
        if isinstance(raw, dict)
        else ((a.get("key"), a.get("value")) for a in raw or [] if isinstance(a, dict))
    )
    for key, value in items:
        if isinstance(value, dict):
            value = next(iter(value.values()), None)
        if isinstance(value, str) and value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[str(key)] = value
    return out


async def _delete(step: Step, experiment_id: str, trace_id: str) -> None:
    await step.request(
        "POST", f"{TRACES_API}/delete-traces", json_body={"experiment_id": experiment_id, "request_ids": [trace_id]}
    )


def explain(run: ScenarioRun) -> None:
    """MLflow's common hints, then tracing's own: a 404 at the OTLP route is the server type."""
    explain_common(run)
    steps = {s.name: s for s in run.steps}
    export = steps.get("trace_export")
    if export is not None and not export.ok and export.status_code == 404:
        run.diagnosis = Diagnosis(
            "config",
            "tracing probe on an MLflow without OTLP ingest: POST /v1/traces is 404 because the server runs"
            f" MLflow's Flask app ({_server_type(export.error or '')}); OTLP needs the default uvicorn server"
            " (no --gunicorn-opts) and a SQL backend store. Not an outage",
        )
    # A trace the server may hold that we could not delete: the delete failed, or the export
    # ended on our side without an answer (the server may store it after our delete ran).
    delete = steps.get("trace_delete")
    unanswered = export is not None and not export.ok and export.status_code is None and not export.skipped
    if delete is not None and (not delete.ok or unanswered):
        leftover = run.facts.probe_trace if isinstance(run.facts, MlflowFacts) else None
        if leftover:
            learnt(run, cleanup_pending=True, leftover_artifacts=(leftover,))


def _server_type(error: str) -> str:
    marker = "'Server: "
    if marker in error:
        return "served by " + error.split(marker, 1)[1].split("'", 1)[0]
    return "server type unknown"


async def _tracing_janitor(
    client: TargetClient, options: TracingOptions, probe_name: str, older_than: float, member: str
) -> list[str]:
    """Delete this probe's traces a killed daemon left: in the probe's own experiment, sent by
    the monitor (service.name), older than the deadline, and whose root span names this probe
    (and in a fleet this member): another probe's or member's trace is never touched."""
    found = await client.request(
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": options.experiment_name},
        timeout=10,
    )
    if found.status_code == 404:
        return []
    check_status(found)
    experiment_id = found.json_object().get("experiment", {}).get("experiment_id")
    if not experiment_id:
        return []
    search = await client.request(
        "POST",
        f"{TRACES_API}/search",
        json_body={
            "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}],
            "max_results": 500,
        },
        timeout=10,
    )
    check_status(search)
    cutoff_ms = (time.time() - older_than) * 1000
    stale = []
    for info in search.json_object().get("traces", []):
        if not isinstance(info, dict) or not str(info.get("trace_id", "")).startswith("tr-"):
            continue
        tags = info.get("tags")
        if (
            not isinstance(tags, dict)
            or tags.get("service.name") != SERVICE_NAME
            or _millis(info.get("request_time")) >= cutoff_ms
        ):
            continue
        got = await client.request("GET", f"{TRACES_API}/get", params={"trace_id": info["trace_id"]}, timeout=10)
        if got.status_code == 404:
            continue
        check_status(got)
        spans = (got.json_object().get("trace") or {}).get("spans") or []
        attributes = [span_attributes(s) for s in spans if isinstance(s, dict)]
        if any(a.get(PROBE_TAG) == probe_name and a.get(MEMBER_TAG, "") == member for a in attributes):
            stale.append(str(info["trace_id"]))
    if stale:
        response = await client.request(
            "POST",
            f"{TRACES_API}/delete-traces",
            json_body={"experiment_id": experiment_id, "request_ids": stale},
            timeout=10,
        )
        check_status(response)
    return [f"trace {t}" for t in stale]


def _millis(value: Any) -> float:
    """request_time as MLflow answers it (RFC 3339 text, or epoch milliseconds); unreadable: never stale."""
    if isinstance(value, (int, float)) or (isinstance(value, str) and value.isdigit()):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000
        except ValueError:
            pass
    return float("inf")


TRACING = Scenario(
    name="mlflow_tracing",
    target_kind="mlflow",
    steps=("experiment_get_or_create", "trace_export", "trace_get", "trace_delete"),
    options_model=TracingOptions,
    run=run_tracing,
    description="MLflow tracing: one probe trace in through OTLP/HTTP JSON, read back and compared, deleted",
    cleanup_steps=("trace_delete",),
    janitor=_tracing_janitor,
    explain=explain,
    metric_families=MlflowStoreGauges,
    facts_model=MlflowFacts,
    sweep=sweep_leftovers,
    writes=True,  # it ingests and deletes a trace
)
