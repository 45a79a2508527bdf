"""Certificate expiry (issue 23): a real MLflow behind a real TLS front with a certificate
valid for 2 days. The probe's own connection yields the expiry and the certificate's
names (no second handshake), the metrics sink exports them, and the value it exported,
fed to promtool with rules.yml, fires SyntheticTargetCertificateExpiring as critical."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from monitor.clients import make_client
from monitor.config import DEFAULT_BUCKETS, TargetConfig
from monitor.results import ProbeResult
from monitor.scenario.registry import SCENARIOS
from monitor.scenario.runner import run_probe
from monitor.sinks.exposition import Exposition
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from tests.faultproxy import FaultProxy, make_self_signed, server_tls_context
from tests.servers import MlflowServer

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules.yml"


def _probe(target: TargetConfig) -> ProbeResult:
    scenario = SCENARIOS["mlflow_read"]

    async def once() -> ProbeResult:
        client = make_client(target)
        try:
            options = scenario.options_model()
            return await run_probe(scenario, client, options, probe="read", target=target.name, timeout=20)
        finally:
            await client.aclose()

    return asyncio.run(once())


def _exported(result: ProbeResult) -> dict[str, tuple[dict[str, str], float]]:
    sink = MetricsSink(Exposition(), DEFAULT_BUCKETS)
    sink.register(ProbeSeries(result.target, result.probe, SCENARIOS[result.scenario].steps, 20.0, result.scenario))
    sink.handle(result)
    body = sink.render().decode()
    return {
        s.name: (s.labels, s.value)
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name.startswith("synthetic_target_tls_")
    }


def humanize_duration(seconds: float) -> str:
    """Prometheus' humanizeDuration for values of a day or more (what the annotation shows)."""
    whole = int(seconds)
    days, hours, minutes, secs = whole // 86400, whole // 3600 % 24, whole // 60 % 60, whole % 60
    assert days >= 1
    return f"{days}d {hours}h {minutes}m {secs}s"


def test_expiry_of_a_real_tls_target_fires_the_critical_rule(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    cert_file, key_file = make_self_signed(tmp_path, "mlflow-ingress")  # valid for 2 days
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    with FaultProxy(mlflow_server.url, tls=server_tls_context(cert_file, key_file)) as front:
        target = TargetConfig.model_validate(
            {"name": "mlflow", "kind": "mlflow", "url": front.url, "tls": {"ca_file": str(cert_file)}}
        )
        result = _probe(target)
        connections = front.stats["connections"]
    assert result.ok, [s.error for s in result.steps if not s.ok]
    assert connections == 1  # every step on the one connection: the expiry came from its handshake

    exported = _exported(result)
    _, expiry = exported["synthetic_target_tls_earliest_cert_expiry_seconds"]
    assert expiry == certificate.not_valid_after_utc.timestamp()
    labels, value = exported["synthetic_target_tls_info"]
    assert value == 1
    assert labels == {
        "target": "mlflow",
        "issuer": "CN=mlflow-ingress",
        "subject": "CN=mlflow-ingress",
        "serial": format(certificate.serial_number, "x"),
    }

    # promtool's clock starts at 0: the exported Unix time becomes "seconds left" from now.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed: apt-get install prometheus")
    left = int(expiry - time.time())
    assert 2 * 86400 - 120 < left <= 2 * 86400
    shown = humanize_duration(left - 15 * 60)  # at eval_time 15m
    case = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'synthetic_target_tls_earliest_cert_expiry_seconds{target="mlflow"}',
                        "values": f"{left}x20",
                    }
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "15m",
                        "alertname": "SyntheticTargetCertificateExpiring",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "target": "mlflow"},
                                "exp_annotations": {
                                    "summary": f"TLS certificate of mlflow expires in {shown}",
                                    "description": (
                                        f"The earliest certificate in the chain target mlflow presents expires in {shown}"
                                        " (under 3 days; negative: already expired). Renew it now;"
                                        " synthetic_target_tls_info names issuer, subject and serial."
                                    ),
                                    "runbook_url": (
                                        "https://runbooks.example.internal/synthetic-monitor#synthetictargetcertificateexpiring"
                                    ),
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
    test_file = tmp_path / "tls.test.yml"
    test_file.write_text(yaml.safe_dump(case, sort_keys=False))
    proc = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_plain_http_exports_no_certificate(mlflow_server: MlflowServer) -> None:
    target = TargetConfig.model_validate({"name": "mlflow", "kind": "mlflow", "url": mlflow_server.url})
    result = _probe(target)
    assert result.ok and result.certificate is None
    assert _exported(result) == {}


def test_a_renewed_certificate_replaces_the_series_and_a_removed_target_drops_them() -> None:
    from prometheus_client import CollectorRegistry

    from monitor.certificates import PeerCertificate
    from monitor.sinks.target_tls import TargetCertificates

    registry = CollectorRegistry()
    certificates = TargetCertificates(registry)
    old = PeerCertificate(1_800_000_000.0, "CN=ca", "CN=mlflow", "0a")
    new = PeerCertificate(1_807_776_000.0, "CN=ca", "CN=mlflow", "0b")
    certificates.observe("mlflow", old)
    certificates.observe("mlflow", None)  # a plain-http run (or no request) changes nothing
    certificates.observe("mlflow", new)
    info = {"target": "mlflow", "issuer": "CN=ca", "subject": "CN=mlflow"}
    assert registry.get_sample_value("synthetic_target_tls_info", {**info, "serial": "0a"}) is None
    assert registry.get_sample_value("synthetic_target_tls_info", {**info, "serial": "0b"}) == 1
    expiry = "synthetic_target_tls_earliest_cert_expiry_seconds"
    assert registry.get_sample_value(expiry, {"target": "mlflow"}) == 1_807_776_000.0
    certificates.forget("mlflow")
    assert registry.get_sample_value(expiry, {"target": "mlflow"}) is None
    assert registry.get_sample_value("synthetic_target_tls_info", {**info, "serial": "0b"}) is None
