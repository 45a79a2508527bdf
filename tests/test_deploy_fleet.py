"""Offline validation of the fleet overlay (deploy/kubernetes/fleet), like the other overlays."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy import K8S_MIN_VERSION, _clean_env, _cli, _dropped_keys, _need_module, _run, one, render

# Rendering the fleet overlay runs kustomize and the validators.
pytestmark = [pytest.mark.integration]


FLEET = "fleet"


def _pod_labels() -> dict[str, str]:
    return dict(one(FLEET, "StatefulSet")["spec"]["template"]["metadata"]["labels"])


def _config() -> dict[str, Any]:
    configmap = one(FLEET, "ConfigMap")
    return dict(yaml.safe_load(configmap["data"]["config.yaml"]))


def test_fleet_renders_its_objects_in_one_namespace() -> None:
    kinds = sorted(d["kind"] for d in render(FLEET))
    assert kinds == sorted(
        ["ConfigMap", "StatefulSet", "Service", "Service", "PodDisruptionBudget", "PrometheusRule", "ServiceMonitor"]
    )
    assert all(d["metadata"].get("namespace") == "asgard" for d in render(FLEET))


def test_fleet_core_objects_validate_strict() -> None:
    _need_module("kubernetes_validate", "kubernetes-validate")
    import kubernetes_validate

    for doc in render(FLEET):
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        for version in sorted({K8S_MIN_VERSION, kubernetes_validate.latest_version()}):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{doc['kind']} {doc['metadata']['name']} invalid for {version}: {exc.message}")


def test_fleet_prometheus_operator_objects_validate() -> None:
    _need_module("cloudcoil.models.prometheus_operator", "cloudcoil-models-prometheus-operator")
    from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

    for kind in ("ServiceMonitor", "PrometheusRule"):
        doc = one(FLEET, kind)
        dumped = (
            getattr(prometheus_operator, kind)
            .model_validate(doc)
            .model_dump(mode="json", by_alias=True, exclude_none=True)
        )
        assert not _dropped_keys(doc, dumped), f"unknown fields in {kind}: {_dropped_keys(doc, dumped)}"


def test_statefulset_spreads_members_and_the_pdb_keeps_a_holder_of_every_probe() -> None:
    sts = one(FLEET, "StatefulSet")
    shard = _config()["shard"]
    assert sts["spec"]["replicas"] == shard["count"], "shard.count must equal the StatefulSet replicas"
    pods = _pod_labels()
    spec = sts["spec"]["template"]["spec"]
    anti = spec["affinity"]["podAntiAffinity"]
    # Preferred only (issue 23): a required rule leaves a replica Pending on fewer nodes than replicas.
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    terms = {t["podAffinityTerm"]["topologyKey"]: t for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]}
    assert set(terms) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert all(t["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pods.items() for t in terms.values())
    (spread,) = spec["topologySpreadConstraints"]
    assert (spread["topologyKey"], spread["whenUnsatisfiable"], spread["maxSkew"]) == (
        "kubernetes.io/hostname",
        "ScheduleAnyway",
        1,
    )
    assert spread["labelSelector"]["matchLabels"].items() <= pods.items()
    pdb = one(FLEET, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pods.items()
    # A drain may take maxUnavailable members: fewer than the holders of each probe.
    assert pdb["spec"]["maxUnavailable"] < shard["replicas_per_probe"]


def test_peers_resolve_through_the_headless_service_of_the_statefulset() -> None:
    sts = one(FLEET, "StatefulSet")
    peers = one(FLEET, "Service", sts["spec"]["serviceName"])
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"] is True
    assert peers["spec"]["selector"].items() <= _pod_labels().items()
    host, _, port = _config()["peers"]["service"].rpartition(":")
    assert host == f"{peers['metadata']['name']}.{peers['metadata']['namespace']}.svc.cluster.local"
    assert int(port) == peers["spec"]["ports"][0]["port"]


def test_location_is_one_pod_label_for_alerts_and_metrics() -> None:
    container = one(FLEET, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    assert env["POD_NAME"] == "metadata.name"
    label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", env["SYNTHETIC_MONITOR_LOCATION"])
    assert label and label.group(1) in _pod_labels()
    relabel = one(FLEET, "ServiceMonitor")["spec"]["endpoints"][0]["relabelings"]
    source = "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label.group(1))
    assert {"sourceLabels": [source], "targetLabel": "location"} in relabel
    assert any(r.get("targetLabel") == "pod" for r in relabel)


def test_fleet_config_validates_as_a_member_and_sends_to_every_alertmanager(tmp_path: Path) -> None:
    config = _config()
    receivers = config["alerting"]["receivers"]
    assert [r["kind"] for r in receivers] == ["alertmanager"] * len(receivers) and len(receivers) >= 2
    path = tmp_path / "config.yaml"
    path.write_text(one(FLEET, "ConfigMap")["data"]["config.yaml"])
    env = _clean_env(POD_NAME="synthetic-monitor-2", SYNTHETIC_MONITOR_LOCATION="in-cluster")
    shown = _run([*_cli(), "config", "show", str(path), "--format", "json"], env=env)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["location"] == "in-cluster" and data["shard"]["index"] == 2 and data["shard"]["probes"]


def test_dashboard_has_a_location_variable_and_a_per_location_availability_panel() -> None:
    dashboard = json.loads((Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboard.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    location = variables["location"]
    assert location["type"] == "query" and location["multi"] and location["includeAll"]
    assert location["allValue"] == ".*"  # matches series without a location label too (one daemon)
    panels = [p for p in dashboard["panels"] if "location" in p.get("title", "").lower()]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    # Each keeps the location dimension: aggregated `by (location, ...)`, or a series the SLO
    # rules already record per location (`target_probe:...`, by target, probe, location).
    assert exprs and all(
        ("by (location" in e or e.startswith("target_probe:")) and 'location=~"$location"' in e for e in exprs
    )
