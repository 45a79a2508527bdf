"""/metrics carries the series every exporter has (issue 23): process_* from /proc, python_gc_*
and python_info, next to the cached per-probe series, on a real daemon."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import DaemonProcess


@pytest.mark.integration
def test_daemon_exports_process_and_python_metrics(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": [{"name": "m", "kind": "mlflow", "url": "http://127.0.0.1:9"}],
                "probes": [{"name": "r", "target": "m", "scenario": "mlflow_read", "interval": "1h"}],
            }
        )
    )
    daemon = DaemonProcess(config, tmp_path, args=()).start()
    try:
        body = httpx.get(f"{daemon.url}/metrics", timeout=30).text
    finally:
        daemon.stop()
    samples = {s.name: s for family in text_string_to_metric_families(body) for s in family.samples}
    assert samples["process_resident_memory_bytes"].value > 10 * 1024 * 1024  # a Python daemon: tens of MiB
    assert samples["process_open_fds"].value >= 3
    assert samples["process_max_fds"].value > 0
    assert samples["process_cpu_seconds_total"].value > 0
    assert samples["process_start_time_seconds"].value > 1.7e9
    assert "python_gc_objects_collected_total" in samples
    assert samples["python_info"].labels["implementation"] == "CPython"
    assert "synthetic_probe_success" in samples  # the cached series are still there
