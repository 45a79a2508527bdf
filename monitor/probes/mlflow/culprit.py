"""MLflow's rule for one culprit per incident over the latest runs of all probes of a target.

Measured on the production shape (gunicorn sync workers, PostgreSQL, S3): one fault gives
each probe its own symptom. A stalled S3 holds every worker, so the read probe's /health
and the write probe's first database step time out while only the artifact steps name
the store; a locked table times out the database routes while /health still answers.
The differential evidence, strongest first:

1. a store a run saw failing (`dependency_up` False, a 503 naming the database, a pool
   timeout) unless a later run saw the same store working;
2. a database route that timed out, or whose worker died answering Flask's HTML 500 or was
   killed by the worker timeout (its connection dropped after WATCHDOG_SECONDS or more),
   after a route touching no store (/health, /version) of the same run answered: the workers
   are fine, the database is not;
3. between the two stores, the one blamed first in the incident (it held the workers that
   the other probes then timed out on); the database on a tie;
4. otherwise the part blamed first (the server, the network, the credentials, the config).

Once a worker died suddenly in the incident (a connection dropped sooner than any worker
timeout: killed or crashed, `SUDDEN_DEATH`), what was only inferred from timing (`TIMING`,
and the timeouts and dropped connections of rule 2) is no database evidence: a request
waiting for a respawned worker times out just like one waiting on a lock. Measured with
workers SIGKILLed every 0.3 s and healthy stores, which otherwise blamed the database in
some incidents and flipped between the two in others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from monitor.probes.mlflow.explain import DB_STEPS, SUDDEN_DEATH, TIMING, sudden_drop
from monitor.results import Blame, Dependency, Diagnosis, ProbeResult, Reason

STORES = ("backend_store", "artifact_store")
# Routes that answer without the database or the artifact store.
NO_STORE_STEPS = frozenset({"health", "version", "server_info"})
_HELD = {"backend_store": "database", "artifact_store": "artifact store"}


def culprit(results: Sequence[ProbeResult], incident: Mapping[str, Blame]) -> Diagnosis | None:
    failing = [r for r in results if not r.ok and r.diagnosis is not None]
    if not failing:
        return None
    newest_seen: dict[str, tuple[float, bool]] = {}
    for result in results:  # oldest first: the newest observation of each store wins
        for store, state in result.facts.dependency_states().items():
            if state is not Dependency.UNKNOWN:  # explained is down, covered by another alert
                newest_seen[str(store)] = (result.started_at, state is Dependency.UP)

    def seen_up_since(store: str, at: float) -> bool:
        seen_at, up = newest_seen.get(store, (0.0, False))
        return up and seen_at > at

    server = incident.get("mlflow_server")
    workers_dying = (server is not None and SUDDEN_DEATH in server.evidence) or any(
        r.failed_step is not None and sudden_drop(r.failed_step) for r in failing
    )
    blamed: dict[str, list[tuple[ProbeResult, str]]] = {}
    for result in failing:
        assert result.diagnosis is not None
        component, summary = result.diagnosis.component, result.diagnosis.summary
        if component in STORES and seen_up_since(component, result.started_at):
            continue  # a later run saw this store working again
        if component in STORES and workers_dying and result.diagnosis.evidence == TIMING:
            component = "mlflow_server"
            summary += "; but a worker died suddenly in this incident: it may have waited for a respawned worker"
        elif component not in STORES and _database_route_failed_behind_live_workers(result, workers_dying):
            step = result.failed_step
            assert step is not None
            component = "backend_store"
            summary = (
                f"database lock or saturation: {step.name} ({step.reason.value if step.reason else 'failed'})"
                " failed while a route touching no store answered in the same run"
            )
        blamed.setdefault(component, []).append((result, summary))
    # A store blamed earlier in this incident and not seen working since explains what the
    # latest runs show now when that is only held workers (timeouts, killed workers).
    held_only = all(_held_symptom(r) for r, _ in (x for found in blamed.values() for x in found))
    remembered = [
        c
        for c in STORES
        if c not in blamed
        and c in incident
        and held_only
        and not seen_up_since(c, incident[c].last_at)
        and not (workers_dying and incident[c].evidence <= {TIMING})
    ]
    if not blamed:
        return None

    def onset(component: str) -> float:
        known = incident.get(component)
        return known.first_at if known is not None else min(r.started_at for r, _ in blamed[component])

    stores = [c for c in STORES if c in blamed] + remembered
    if stores:
        chosen = min(stores, key=lambda c: (onset(c), STORES.index(c)))
    else:
        chosen = min(blamed, key=lambda c: (onset(c), c))
    if chosen in blamed:
        result, summary = blamed[chosen][-1]
        text = f"{summary} (probe {result.probe})"
    else:
        text = f"{incident[chosen].summary} (probe {incident[chosen].probe}, first in this incident)"
    others = sorted({r.probe for c, found in blamed.items() if c != chosen for r, _ in found})
    if chosen in STORES and others:
        text += f"; the failures of {', '.join(others)} follow from it: workers held by the {_HELD[chosen]}"
    return Diagnosis(chosen, text)


def _held_symptom(result: ProbeResult) -> bool:
    """What a worker held by a slow store looks like from outside: no answer in time, or killed."""
    step = result.failed_step
    return step is not None and step.reason in (Reason.TIMEOUT, Reason.WORKER_FAILURE)


def _database_route_failed_behind_live_workers(result: ProbeResult, workers_dying: bool) -> bool:
    step = result.failed_step
    if step is None or step.skipped or step.name not in DB_STEPS:
        return False
    # A worker that died answering Flask's HTML 500 (gunicorn aborted it while it waited on
    # the database); unless workers die suddenly in this incident (then the request may have
    # waited for a respawned one), also our timeout or a connection the worker timeout
    # dropped. A sudden drop is no database evidence: a worker killed for any reason.
    dying_in_database = step.reason is Reason.WORKER_FAILURE and step.status_code == 500
    killed_by_timeout = step.reason is Reason.WORKER_FAILURE and step.status_code is None and not sudden_drop(step)
    timed = step.reason is Reason.TIMEOUT or killed_by_timeout
    if not (dying_in_database or (timed and not workers_dying)):
        return False
    before = result.steps[: result.steps.index(step)]
    return any(s.ok and not s.skipped and s.name in NO_STORE_STEPS for s in before)
