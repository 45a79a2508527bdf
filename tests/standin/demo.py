"""The local demo stack: a real MLflow server, the Asgard stand-in wired to it, the daemon
probing both, and (when installed) Prometheus with the project's rules and Alertmanager.

Everything binds to 127.0.0.1, lives in one temporary folder, and stops on Ctrl-C or
SIGTERM: each child runs in its own process group and is stopped by it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]  # the clone: tests/standin/demo.py
REPO_DEPLOY = REPO / "deploy"


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    url: str


@dataclass
class Stack:
    workdir: Path
    children: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        command: list[str],
        url: str,
        health: str | None,
        timeout: float = 120.0,
        env: dict[str, str] | None = None,
    ) -> Child:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            # the stand-ins run as `python -m tests.standin...` from the clone
            env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=_pythonpath(), **(env or {})),
        )
        child = Child(name, proc, log, url)
        self.children.append(child)
        if health is not None:
            _wait(health, timeout, child, self.workdir / f"{name}.log")
        return child

    def dead(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                try:
                    os.killpg(child.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
            child.log.close()


def _wait(url: str, timeout: float, child: Child, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode} while starting:\n{tail}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{child.name} did not answer at {url} within {timeout:.0f}s")


def _port(preferred: int) -> int:
    """The preferred port if it is free on 127.0.0.1, else any free one."""
    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")


def _mlflow_command() -> list[str] | None:
    beside = Path(sys.executable).parent / "mlflow"
    found = str(beside) if beside.exists() else shutil.which("mlflow")
    return [found] if found else None


def demo_config(
    mlflow_url: str,
    asgard_url: str,
    listen: str,
    alertmanager_url: str | None,
    webhook_url: str | None,
    state_file: Path,
) -> dict[str, object]:
    receivers = []
    if alertmanager_url:
        receivers.append({"kind": "alertmanager", "url": alertmanager_url})
    if webhook_url:
        receivers.append({"kind": "webhook", "url": webhook_url})
    return {
        "listen": listen,
        "log": {"level": "info", "format": "json"},
        "targets": [
            {"name": "mlflow", "kind": "mlflow", "url": mlflow_url},
            {"name": "asgard", "kind": "asgard", "url": asgard_url},
        ],
        "probes": [
            {"name": "mlflow_read", "target": "mlflow", "scenario": "mlflow_read", "interval": "5s", "timeout": "4s"},
            {
                "name": "mlflow_write",
                "target": "mlflow",
                "scenario": "mlflow_write",
                "interval": "15s",
                "timeout": "6s",
                "step_timeout": "3s",  # + 2 cleanup steps x 3s <= 90% of 15s
                "options": {"experiment_name": "synthetic-monitor", "artifacts": True},
            },
            {"name": "asgard_api", "target": "asgard", "scenario": "asgard", "interval": "5s", "timeout": "4s"},
        ],
        "alerting": {
            "failure_threshold": 2,
            "success_threshold": 2,
            "startup_grace": "10s",
            "resend_interval": "30s",
            "state_file": str(state_file),
            "receivers": receivers,
        },
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synthetic-monitor demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--asgard-port", type=int, default=8000)
    parser.add_argument("--monitor-port", type=int, default=9356)
    parser.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus/Alertmanager")
    parser.add_argument("--workdir", help="keep state here instead of a temporary folder")
    return parser


def run_demo(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    mlflow = _mlflow_command()
    if mlflow is None:
        print("synthetic-monitor demo: MLflow is not installed: pip install 'synthetic-monitor[demo]'", file=sys.stderr)
        return 2
    workdir = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="synthetic-monitor-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        return _run(args, mlflow, stack, stop)
    except RuntimeError as exc:
        print(f"synthetic-monitor demo: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping the demo stack ...", flush=True)
        stack.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        print("stopped.", flush=True)


def _run(args: argparse.Namespace, mlflow: list[str], stack: Stack, stop: threading.Event) -> int:
    work = stack.workdir
    mlflow_port, asgard_port, monitor_port = (
        _port(args.mlflow_port),
        _port(args.asgard_port),
        _port(args.monitor_port),
    )
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    asgard_url = f"http://127.0.0.1:{asgard_port}"
    monitor_url = f"http://127.0.0.1:{monitor_port}"
    print(f"starting MLflow on {mlflow_url} (sqlite in {work}) ...", flush=True)
    stack.start(
        "mlflow",
        [
            *mlflow,
            "server",
            "--backend-store-uri",
            f"sqlite:///{work}/mlflow.db",
            "--artifacts-destination",
            str(work / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
        ],
        mlflow_url,
        f"{mlflow_url}/health",
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    stack.start(
        "asgard",
        [
            sys.executable,
            "-m",
            "tests.standin.asgard",
            "--port",
            str(asgard_port),
            "--mlflow-url",
            mlflow_url,
            "--models",
            "demo-model",
        ],
        asgard_url,
        f"{asgard_url}/admin/faults",
    )
    alertmanager_url = webhook_url = prometheus_url = None
    alertmanager = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
    if not args.no_prometheus and shutil.which("prometheus") and alertmanager:
        alertmanager_url, webhook_url, prometheus_url = _start_prometheus_stack(stack, monitor_port, alertmanager)
    config_path = work / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            demo_config(
                mlflow_url,
                asgard_url,
                f"127.0.0.1:{monitor_port}",
                alertmanager_url,
                webhook_url,
                work / "alert-state.json",
            )
        )
    )
    stack.start(
        "monitor",
        [sys.executable, "-m", "monitor", "run", "--config", str(config_path)],
        monitor_url,
        f"{monitor_url}/healthz",
        timeout=30,
    )
    _banner(mlflow_url, asgard_url, monitor_url, prometheus_url, alertmanager_url, webhook_url, work)
    announced = False
    while not stop.wait(0.5):
        dead = stack.dead()
        if dead is not None:
            print(
                f"{dead.name} exited unexpectedly with {dead.proc.returncode}; see {work / (dead.name + '.log')}",
                file=sys.stderr,
            )
            return 1
        if not announced:
            announced = _all_passing(monitor_url)
    return 0


def _start_prometheus_stack(stack: Stack, monitor_port: int, alertmanager: str) -> tuple[str, str, str]:
    work = stack.workdir
    am_port, prom_port, hook_port = _port(9093), _port(9090), _port(9095)
    am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
    webhook_url = f"http://127.0.0.1:{hook_port}/alerts"
    stack.start(
        "webhook",
        [
            sys.executable,
            "-m",
            "tests.standin.webhook",
            "--port",
            str(hook_port),
            "--output",
            str(work / "webhook-alerts.jsonl"),
        ],
        webhook_url,
        f"http://127.0.0.1:{hook_port}/received",
    )
    (work / "alertmanager.yml").write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "webhook",
                    "group_by": ["alertname", "target", "probe"],
                    "group_wait": "5s",
                    "group_interval": "30s",
                    "repeat_interval": "4h",
                },
                "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
            }
        )
    )
    stack.start(
        "alertmanager",
        [
            alertmanager,
            f"--config.file={work / 'alertmanager.yml'}",
            f"--storage.path={work / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        am_url,
        f"{am_url}/-/ready",
    )
    shutil.copy(REPO_DEPLOY / "prometheus" / "rules.yml", work / "rules.yml")
    (work / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
                "rule_files": ["rules.yml"],
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
                "scrape_configs": [
                    {"job_name": "synthetic-monitor", "static_configs": [{"targets": [f"127.0.0.1:{monitor_port}"]}]}
                ],
            }
        )
    )
    stack.start(
        "prometheus",
        [
            "prometheus",
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        prom_url,
        f"{prom_url}/-/ready",
    )
    return am_url, webhook_url, prom_url


def _all_passing(monitor_url: str) -> bool:
    try:
        status = httpx.get(f"{monitor_url}/status", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    lasts = [p.get("last") for p in status.get("probes", [])]
    if lasts and all(last and last.get("ok") for last in lasts):
        print(f"all {len(lasts)} probes passing: " + ", ".join(p["name"] for p in status["probes"]), flush=True)
        return True
    return False


def _banner(
    mlflow_url: str,
    asgard_url: str,
    monitor_url: str,
    prometheus_url: str | None,
    alertmanager_url: str | None,
    webhook_url: str | None,
    work: Path,
) -> None:
    lines = [
        "",
        "synthetic-monitor demo is running; Ctrl-C stops everything.",
        f"  metrics      {monitor_url}/metrics",
        f"  status       {monitor_url}/status      health {monitor_url}/healthz",
        f"  MLflow       {mlflow_url}",
        f"  Asgard       {asgard_url}/mlops/status   (stand-in; faults at {asgard_url}/admin/faults)",
    ]
    if prometheus_url:
        lines += [
            f"  Prometheus   {prometheus_url}/alerts   (project rules loaded)",
            f"  Alertmanager {alertmanager_url}   alerts received by the webhook: {webhook_url}",
        ]
    lines += [
        f"  logs         {work}/*.log",
        "",
        "Make Asgard report MLflow down, watch the asgard_api probe fail with dependency_unavailable:",
        f"  curl -s -X POST {asgard_url}/admin/faults -d '{{\"mlflow_available\": false}}'",
        f"  curl -s {monitor_url}/metrics | grep 'step_failures_total.*dependency_unavailable'",
        "Clear every fault:",
        f"  curl -s -X DELETE {asgard_url}/admin/faults",
        "Other switches: latency (seconds), error_status (e.g. 503), hang, drop, feast_available, no_models, non_json.",
        "",
    ]
    print("\n".join(lines), flush=True)
