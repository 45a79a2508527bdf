"""MLflow model registry scenario: what a deployment pipeline does when it promotes a model.

One long-lived probe registered model; every run registers a new version from a fresh
probe run's artifact, points a per-run alias at it, resolves the alias and compares,
then deletes the version, the artifact and the run again, even after a failed step.
So after any number of runs exactly one registered model and no versions are left. The
alias is per run so that two replicas probing the same model never read each other's.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from pydantic import Field

from monitor.http.client import TargetClient, check_status
from monitor.probes.mlflow.api import (
    API,
    MEMBER_TAG,
    PROBE_TAG,
    SYNTHETIC_TAG,
    MlflowFacts,
    artifact_path,
    create_probe_run,
    delete_stale_runs,
    dig,
    experiment_get_or_create,
    probe_tags,
    require_str,
    sweep_leftovers,
)
from monitor.probes.mlflow.explain import explain
from monitor.probes.mlflow.gauges import MlflowStoreGauges
from monitor.results import Reason
from monitor.scenario.base import (
    DefaultProbe,
    Scenario,
    ScenarioOptions,
    ScenarioRun,
    Step,
)

ARTIFACT_DIR = "synthetic-monitor-model"
# Model-version creation may be asynchronous (PENDING_REGISTRATION -> READY): poll this often.
READY_POLL_SECONDS = 0.2


class RegistryOptions(ScenarioOptions):
    # No quotes: the name goes into MLflow search filters as a string literal.
    model_name: str = Field(default="synthetic-monitor-probe", pattern=r"^[A-Za-z0-9_.\-]+$", max_length=256)
    experiment_name: str = Field(default="synthetic-monitor", min_length=1)


async def run_registry(run: ScenarioRun, options: RegistryOptions) -> None:
    model = options.model_name
    async with run.step("registered_model_get_or_create") as step:
        await _registered_model_get_or_create(step, model)
    async with run.step("experiment_get_or_create") as step:
        experiment_id = await experiment_get_or_create(step, options.experiment_name)
    run_id: str | None = None
    artifact: str | None = None
    version: str | None = None
    version_attempted = False
    probe = run.probe_name or "probe"
    try:
        async with run.step("runs_create") as step:
            new_run, artifact_uri = await create_probe_run(step, run, experiment_id)
            run_id = new_run
            artifact_uri = artifact_uri.rstrip("/")
        # Set before the request: a PUT that timed out may still have stored the file.
        artifact = artifact_path(experiment_id, new_run, artifact_uri, f"{ARTIFACT_DIR}/MLmodel")
        async with run.step("artifact_put") as step:
            content = f"# synthetic-monitor probe model {secrets.token_hex(8)}\nflavors: {{}}\n".encode()
            await step.request("PUT", artifact, content=content, headers={"Content-Type": "application/octet-stream"})
        source = f"{artifact_uri}/{ARTIFACT_DIR}" if artifact_uri else f"runs:/{new_run}/{ARTIFACT_DIR}"
        async with run.step("model_version_create") as step:
            version_attempted = True
            version = new_version = await _create_version(run, step, model, source, new_run, probe)
        alias = f"synthetic-{secrets.token_hex(4)}"
        async with run.step("model_alias_set") as step:
            await step.request(
                "POST",
                f"{API}/registered-models/alias",
                json_body={"name": model, "alias": alias, "version": new_version},
            )
        async with run.step("model_alias_get") as step:
            found = await step.request("GET", f"{API}/registered-models/alias", params={"name": model, "alias": alias})
            _verify_alias(step, dig(step, found.json_object(), "model_version"), alias, new_version, new_run)
    finally:
        # Deleting the version also deletes its aliases.
        if version_attempted:
            async with run.step("model_version_delete", cleanup=True) as step:
                await _delete_versions(step, model, version, run_id)
        if artifact is not None:
            async with run.step("artifact_delete", cleanup=True) as step:
                await step.request("DELETE", artifact, expect={200, 204, 404})
        if run_id is not None:
            async with run.step("runs_delete", cleanup=True) as step:
                await step.request("POST", f"{API}/runs/delete", json_body={"run_id": run_id})


async def _registered_model_get_or_create(step: Step, name: str) -> None:
    """One probe model forever: look it up, create it once, tolerate a racing replica.

    MLflow's basic-auth app with `default_permission = NO_PERMISSIONS` answers 403, not
    404, for a model nobody may read yet, so a 403 also tries the create: the creator
    becomes the model's manager. If the model exists after all, the 403 stands.
    """
    found = await step.request("GET", f"{API}/registered-models/get", params={"name": name}, expect={200, 403, 404})
    if found.status_code == 200:
        dig(step, found.json_object(), "registered_model")
        return
    created = await step.request(
        "POST",
        f"{API}/registered-models/create",
        json_body={
            "name": name,
            "description": "Synthetic-monitor probe model: versions come and go every run, keep the model.",
            "tags": [{"key": SYNTHETIC_TAG, "value": "true"}],
        },
        expect={200, 400},
    )
    if created.status_code == 200:
        return
    error = created.json_object() if created.body.startswith(b"{") else {}
    if error.get("error_code") != "RESOURCE_ALREADY_EXISTS":
        check_status(created)  # raises with MLflow's message
    check_status(found, {200, 404})  # it exists but we may not read it: that 403 is the failure


async def _create_version(run: ScenarioRun, step: Step, model: str, source: str, run_id: str, probe: str) -> str:
    """Register the run's artifact as a new version and wait until MLflow says READY."""
    body = {
        "name": model,
        "source": source,
        "run_id": run_id,
        "description": "synthetic-monitor probe version, deleted at the end of the run",
        "tags": probe_tags(probe, run.member),
    }
    created = dig(
        step,
        (await step.request("POST", f"{API}/model-versions/create", json_body=body)).json_object(),
        "model_version",
    )
    version = require_str(step, created, "version")
    status = created.get("status", "READY")
    waited_from = run.clock()
    while status == "PENDING_REGISTRATION":
        if run.time_left() <= READY_POLL_SECONDS:
            step.fail(
                Reason.TIMEOUT,
                f"model version {version} still PENDING_REGISTRATION after "
                f"{run.clock() - waited_from:.3g}s, at the probe's deadline",
            )
        await asyncio.sleep(READY_POLL_SECONDS)
        got = await step.request("GET", f"{API}/model-versions/get", params={"name": model, "version": version})
        created = dig(step, got.json_object(), "model_version")
        status = created.get("status", "READY")
    if status != "READY":
        detail = created.get("status_message") or "no status message"
        step.fail(Reason.VALIDATION_FAILED, f"model version {version} ended {status}: {detail}")
    return version


def _verify_alias(step: Step, found: dict[str, Any], alias: str, version: str, run_id: str) -> None:
    problems = []
    if str(found.get("version")) != version:
        problems.append(f"version is {found.get('version')!r}, expected {version!r}")
    if found.get("run_id") != run_id:
        problems.append(f"run_id is {found.get('run_id')!r}, expected {run_id!r}")
    if problems:
        step.fail(Reason.VALIDATION_FAILED, f"alias {alias!r} resolves wrongly: " + "; ".join(problems))


async def _delete_versions(step: Step, model: str, version: str | None, run_id: str | None) -> None:
    """Delete the run's version; if the create answer never came, find it by the run id."""
    versions = [version] if version is not None else []
    if version is None and run_id is not None:
        found = await step.request(
            "GET",
            f"{API}/model-versions/search",
            params={"filter": f"name = '{model}' and run_id = '{run_id}'", "max_results": 10},
        )
        versions = [str(v.get("version")) for v in found.json_object().get("model_versions", []) if isinstance(v, dict)]
    if not versions:
        step.skip("no model version was created")
    for number in versions:
        await step.request(
            "DELETE", f"{API}/model-versions/delete", json_body={"name": model, "version": number}, expect={200, 404}
        )


async def delete_stale_versions(
    client: TargetClient,
    model_name: str,
    probe_name: str,
    older_than_seconds: float,
    timeout: float = 10.0,
    member: str = "",
) -> list[str]:
    """Delete versions of the probe model that a killed daemon left behind; returns their numbers.

    Only versions tagged with this probe's name and older than the deadline are touched,
    so a replica's in-flight version is left alone; in a fleet (`member` set) only this
    member's versions, so another member's version is never touched.
    """
    found = await client.request(
        "GET",
        f"{API}/model-versions/search",
        params={"filter": f"name = '{model_name}'", "max_results": 1000},
        timeout=timeout,
    )
    check_status(found)
    cutoff_ms = (time.time() - older_than_seconds) * 1000
    stale = []
    for version in found.json_object().get("model_versions", []):
        if not isinstance(version, dict):
            continue
        tags = {t.get("key"): t.get("value") for t in version.get("tags", []) if isinstance(t, dict)}
        if member and tags.get(MEMBER_TAG) != member:
            continue
        if tags.get(PROBE_TAG) == probe_name and int(version.get("creation_timestamp", 0)) < cutoff_ms:
            stale.append(str(version.get("version")))
    for number in stale:
        response = await client.request(
            "DELETE", f"{API}/model-versions/delete", json_body={"name": model_name, "version": number}, timeout=timeout
        )
        if response.status_code != 404:  # a racing replica's janitor got there first
            check_status(response)
    return stale


async def _registry_janitor(
    client: TargetClient, options: RegistryOptions, probe_name: str, older_than: float, member: str
) -> list[str]:
    versions = await delete_stale_versions(client, options.model_name, probe_name, older_than, member=member)
    runs = await delete_stale_runs(client, options.experiment_name, probe_name, older_than, member=member)
    return [f"model version {options.model_name}/{v}" for v in versions] + [f"run {r}" for r in runs]


REGISTRY = Scenario(
    name="mlflow_registry",
    target_kind="mlflow",
    steps=(
        "registered_model_get_or_create",
        "experiment_get_or_create",
        "runs_create",
        "artifact_put",
        "model_version_create",
        "model_alias_set",
        "model_alias_get",
        "model_version_delete",
        "artifact_delete",
        "runs_delete",
    ),
    options_model=RegistryOptions,
    run=run_registry,
    description="MLflow model registry: register a version from a probe run, alias it, resolve it, delete it",
    cleanup_steps=("model_version_delete", "artifact_delete", "runs_delete"),
    janitor=_registry_janitor,
    default_probe=DefaultProbe(
        "registry",
        "5m",
        "30s",
        standalone_options={"model_name": "synthetic-monitor-probe", "experiment_name": "synthetic-monitor"},
    ),
    explain=explain,
    metric_families=MlflowStoreGauges,
    facts_model=MlflowFacts,
    sweep=sweep_leftovers,
    writes=True,
)
