"""Name the broken part of a failed run: `Diagnosis(component, summary)`.

The reason says *what* went wrong at a step (timeout, worker_failure, ...); on-call needs
*which part* to look at, because each part has its own runbook: the MLflow server and its
workers, its backend store (the database), its artifact store (S3), the network, the
credentials, the monitor's configuration, Asgard, or the monitor itself.

Order of evidence, most specific first:
1. a component the failed step carries (the monitor's own connection pool; a scenario's
   re-classification, e.g. MLflow's 503 naming a database error is `backend_store`);
2. the scenario's own hint for the run (`ScenarioRun.diagnosis`, set by `Scenario.explain`);
3. generic rules on the reason and status below, which know no scenario;
4. otherwise the service itself (the target kind's server component).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from monitor.results import COMPONENTS, Diagnosis, ProbeResult, Reason, StepResult

# A target kind's own rule for a failed step it recognises: (component, what) or None.
KindRule = Callable[[StepResult], "tuple[str, str] | None"]


# One line per component: what it means and where to look (README "Runbook by component").
WHAT = {
    "mlflow_server": "the MLflow server or its workers",
    "backend_store": "MLflow's backend store (the tracking database)",
    "artifact_store": "MLflow's artifact store (S3 bucket behind the artifact proxy)",
    "network": "the network path to the target (DNS, TLS, routing)",
    "auth": "the probe's credentials or permissions",
    "config": "the monitor's configuration of this target (URL, host, path)",
    "asgard": "the Asgard MLOps API",
    "monitor": "the synthetic monitor itself (not the target)",
}

_REFUSED = re.compile(r"refused|errno 111", re.I)


def is_monitor_fault(result: ProbeResult) -> bool:
    """The run failed because of the monitor's own resources (its connection pool), so it
    is no evidence about the target: counted as the monitor's job event, not a target failure.
    A bug in a scenario (internal_error without a component) still counts as a failed run."""
    step = result.failed_step
    return step is not None and step.component == "monitor"


def runbook_anchor(component: str) -> str:
    """The README/runbook anchor of a component, e.g. `diagnosis-backend_store`."""
    return f"diagnosis-{component}"


def diagnose(
    result: ProbeResult, server: str, hint: Diagnosis | None = None, kind_rule: KindRule | None = None
) -> Diagnosis | None:
    """The diagnosis of a failed run (None when it passed); `server` is the component that
    answers for the target's kind when nothing more specific is known, and `kind_rule` the
    kind's own rule, tried before the generic ones (`TargetKind.server_component`, `.diagnose`)."""
    step = result.failed_step
    if step is None:
        return None
    where = f"step {step.name}, {step.reason.value if step.reason else 'failed'}"
    if step.component in COMPONENTS:
        if hint is not None and hint.component == step.component:
            return hint
        return Diagnosis(step.component, f"{WHAT[step.component]} failing ({where})")
    if hint is not None and hint.component in COMPONENTS:
        return hint
    known = kind_rule(step) if kind_rule is not None else None
    component, what = known if known is not None else _generic(step, server)
    return Diagnosis(component, f"{what} ({where})")


def _generic(step: StepResult, server: str) -> tuple[str, str]:
    reason = step.reason
    error = step.error or ""
    status = step.status_code
    if reason is Reason.INTERNAL_ERROR:
        return "monitor", "a bug in the probe itself (traceback in the monitor's log)"
    if reason is Reason.UNREACHABLE:
        if _REFUSED.search(error):
            return server, "nothing listens on the target's port: the server process is down (or the port is wrong)"
        return "network", "cannot connect to the target (DNS, routing or a firewall)"
    if reason is Reason.TLS_ERROR:
        return "network", "the TLS handshake failed (certificate, CA bundle or an intercepting proxy)"
    if status in (401, 403):
        return "auth", f"the server refused the probe's credentials or permissions (HTTP {status})"
    if status in (404, 405) and reason is Reason.HTTP_ERROR:
        return "config", f"HTTP {status}: wrong URL, base path or API version for this target"
    if reason is Reason.WORKER_FAILURE:
        return server, "server workers killed or crashed mid-request, or a proxy in front answered 502/503/504"
    if reason is Reason.TIMEOUT:
        return server, "no complete answer within the deadline: hung or saturated workers"
    if reason is Reason.DEPENDENCY_UNAVAILABLE:
        return server, "the service reports one of its dependencies unavailable"
    if reason is Reason.VALIDATION_FAILED:
        return server, "the service answered but returned other data than was written"
    if reason is Reason.INVALID_RESPONSE:
        return server, "the answer is not what the API returns (wrong content or shape)"
    return server, f"unexpected answer{f' HTTP {status}' if status else ''} from the service"
