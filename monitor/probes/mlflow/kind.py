"""The MLflow target kind and the list of its scenarios (this plug-in's registry line points here)."""

from __future__ import annotations

from monitor.probes.mlflow.alerts import ALERTS
from monitor.probes.mlflow.culprit import culprit
from monitor.probes.mlflow.explain import classify_error, diagnose_step, error_hint
from monitor.probes.mlflow.read import READ
from monitor.probes.mlflow.registry import REGISTRY
from monitor.probes.mlflow.tracing import TRACING
from monitor.probes.mlflow.write import WRITE
from monitor.scenario.base import (
    StandaloneTarget,
    TargetKind,
)
from monitor.scenario.contract import Component

KIND = TargetKind(
    name="mlflow",
    description="an MLflow tracking server",
    # MLflow's own conventions: username+password means basic auth, else a token.
    credential_env=("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"),
    standalone=StandaloneTarget("mlflow", "MLFLOW_TRACKING_URI", "http://localhost:5000"),
    error_hint=error_hint,
    classify_error=classify_error,
    server_component="mlflow_server",
    components=(
        Component("mlflow_server", "the MLflow server or its workers"),
        Component("backend_store", "MLflow's backend store (the tracking database)"),
        Component("artifact_store", "MLflow's artifact store (S3 bucket behind the artifact proxy)"),
    ),
    dependencies=("backend_store", "artifact_store"),
    alerts=ALERTS,
    diagnose=diagnose_step,
    culprit=culprit,
)


KINDS = (KIND,)


SCENARIOS = (READ, WRITE, REGISTRY, TRACING)
