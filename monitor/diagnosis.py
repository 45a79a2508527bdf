"""Name the broken part of a failed run: `Diagnosis(component, summary)`.

The reason says *what* went wrong at a step (timeout, worker_failure, ...); on-call needs
*which part* to look at, because each part has its own runbook: the service's server and
its workers, a store or service behind it, the network, the credentials, the monitor's
configuration, or the monitor itself. The generic parts are known here; a target kind
declares its own (`TargetKind.components`, e.g. a database behind the service).

Order of evidence, most specific first:
1. a component the failed step carries (the monitor's own connection pool; a scenario's
   re-classification, e.g. a 503 naming a database error blames the kind's database part);
2. the scenario's own hint for the run (`ScenarioRun.diagnosis`, set by `Scenario.explain`);
3. the kind's own rule for the failed step (`TargetKind.diagnose`);
4. generic rules on the reason and status below, which know no scenario;
5. otherwise the service itself (the target kind's server component).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from monitor.results import Diagnosis, ProbeResult, Reason, StepResult
from monitor.scenario.contract import GENERIC_COMPONENTS

# A target kind's own rule for a failed step it recognises: (component, what) or None.
KindRule = Callable[[StepResult], "tuple[str, str] | None"]

# Component name -> one line of what it means and where to look (the runbook by component).
GENERIC: Mapping[str, str] = {c.name: c.runbook for c in GENERIC_COMPONENTS}

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
    result: ProbeResult,
    server: str = "server",
    hint: Diagnosis | None = None,
    kind_rule: KindRule | None = None,
    components: Mapping[str, str] = GENERIC,
) -> Diagnosis | None:
    """The diagnosis of a failed run (None when it passed); `server` is the component that
    answers for the target's kind when nothing more specific is known, `kind_rule` the
    kind's own rule, tried before the generic ones, and `components` every component the
    kind may be blamed on with its runbook line (`TargetKind.server_component`, `.diagnose`,
    `.component_runbooks()`)."""
    step = result.failed_step
    if step is None:
        return None
    where = f"step {step.name}, {step.reason.value if step.reason else 'failed'}"
    if step.component is not None and step.component in components:
        if hint is not None and hint.component == step.component:
            return hint
        return Diagnosis(step.component, f"{components[step.component]} failing ({where})")
    if hint is not None and hint.component in components:
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
