"""Every start-up failure and every command-line form says what is wrong in one line on
stderr and exits 2 (issue 23); config problems are all listable and name the fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ASGARD_", "SYNTHETIC_MONITOR_"))}


def _monitor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], cwd=REPO, capture_output=True, text=True, env=_env(), timeout=60
    )


def _one_line_exit_2(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("synthetic-monitor")
    return lines[0]


def _config(tmp_path: Path, **top: object) -> Path:
    document = {
        "targets": [{"name": "m", "kind": "mlflow", "url": "http://127.0.0.1:9"}],
        "probes": [{"name": "r", "target": "m", "scenario": "mlflow_read"}],
        **top,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


# --------------------------------------------------------------------------- start-up failures


@pytest.mark.integration
def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = _one_line_exit_2(_monitor("run", "--config", str(_config(tmp_path)), "--listen", f"127.0.0.1:{port}"))
    assert line == f"synthetic-monitor: cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.mark.integration
def test_unreadable_web_config(tmp_path: Path) -> None:
    missing = tmp_path / "absent-web.yml"
    line = _one_line_exit_2(
        _monitor(
            "run", "--config", str(_config(tmp_path)), "--listen", "127.0.0.1:0", "--web.config.file", str(missing)
        )
    )
    assert f"{missing}: cannot read the web config file" in line


@pytest.mark.integration
def test_bad_tls_files(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config: {cert_file: cert.pem, key_file: key.pem}\n")
    line = _one_line_exit_2(
        _monitor("run", "--config", str(_config(tmp_path)), "--listen", "127.0.0.1:0", "--web.config.file", str(web))
    )
    assert "the certificate and key do not load" in line


# --------------------------------------------------------------------------- command-line forms


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["check", "--bogus"], "unrecognized arguments: --bogus"),
        (["config", "frobnicate"], "invalid choice: 'frobnicate'"),
        (["check", "--repeat", "many"], "argument --repeat: invalid int value: 'many'"),
        ([], "the following arguments are required: command"),
        (["config", "validate"], "config validate takes one file: FILE or --config FILE"),
    ],
)
@pytest.mark.integration
def test_usage_errors_are_one_line(args: list[str], says: str) -> None:
    assert says in _one_line_exit_2(_monitor(*args))


@pytest.mark.integration
def test_config_validate_takes_config_like_run_and_check(tmp_path: Path) -> None:
    path = _config(tmp_path)
    for form in ([str(path)], ["--config", str(path)]):
        proc = _monitor("config", "validate", *form)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"{path}: ok (1 targets, 1 probes)"


@pytest.mark.integration
def test_validate_all_lists_every_problem(tmp_path: Path) -> None:
    path = _config(tmp_path, listen="nowhere", log={"levle": "info"})
    first = _one_line_exit_2(_monitor("config", "validate", str(path)))
    assert first.endswith("(and 1 more problem: `config validate --all` lists them)")
    proc = _monitor("config", "validate", "--all", "--config", str(path))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"synthetic-monitor: config error: {path}: listen: must be HOST:PORT with a port 0-65535, got 'nowhere'",
        f"synthetic-monitor: config error: {path}: log.levle: unknown key (did you mean 'level'?)",
    ]


# --------------------------------------------------------------------------- messages that name the fix


def _problem(tmp_path: Path, document: dict[str, object]) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(pytest.raises(ConfigError, load_config, path, env={}).value).removeprefix(f"{path}: ")


def test_did_you_mean_a_known_key(tmp_path: Path) -> None:
    target = {"name": "m", "kind": "mlflow", "url": "http://127.0.0.1:9"}
    probe = {"name": "r", "target": "m", "scenario": "mlflow_read"}
    assert _problem(tmp_path, {"targets": [target], "probes": [probe], "alertng": {}}) == (
        "alertng: unknown key (did you mean 'alerting'?)"
    )
    assert _problem(tmp_path, {"targets": [target], "probes": [{**probe, "intervall": "30s"}]}) == (
        "probes[0].intervall: unknown key (did you mean 'interval'?)"
    )
    assert _problem(tmp_path, {"targets": [{**target, "tls": {"verfy": False}}], "probes": [probe]}) == (
        "targets[0].tls.verfy: unknown key (did you mean 'verify'?)"
    )
    assert _problem(tmp_path, {"targets": [target], "probes": [{**probe, "options": {"max_result": 5}}]}) == (
        "probes[0].options.max_result: unknown key (did you mean 'max_results'?)"
    )
    # Nothing close: no guess.
    assert _problem(tmp_path, {"targets": [target], "probes": [probe], "zzz": 1}) == "zzz: unknown key"


def test_deadline_names_the_largest_that_fits(tmp_path: Path) -> None:
    target = {"name": "m", "kind": "mlflow", "url": "http://127.0.0.1:9"}
    write = {"name": "w", "target": "m", "scenario": "mlflow_write", "interval": "30s"}
    message = _problem(tmp_path, {"targets": [target], "probes": [{**write, "timeout": "29s"}]})
    assert message.endswith("the largest timeout that fits is 22s")  # 22s + the 5s cleanup budget = 27s = 90%
    path = tmp_path / "fits.yaml"
    path.write_text(yaml.safe_dump({"targets": [target], "probes": [{**write, "timeout": "22s"}]}))
    assert load_config(path, env={}).probes[0].deadline == 22.0
    read = {"name": "r", "target": "m", "scenario": "mlflow_read", "interval": "10s", "timeout": "11s"}
    assert _problem(tmp_path, {"targets": [target], "probes": [read]}).endswith("the largest timeout that fits is 9s)")


def test_an_asgard_target(tmp_path: Path) -> None:
    target = {"name": "m", "kind": "mlflow", "url": "http://127.0.0.1:9"}
    probe = {"name": "a", "target": "m", "scenario": "asgard"}
    assert _problem(tmp_path, {"targets": [target], "probes": [probe]}) == (
        "probes[0].scenario: scenario 'asgard' needs an asgard target, 'm' is mlflow"
    )
