"""Configuration: durations, defaults from the environment, secrets, and the CLI's error contract.

The malformed-config corpus runs the real command line (`python -m monitor config
validate FILE`) in subprocesses: exit code 2, exactly one line on stderr naming the
field, never a traceback. The subprocesses of this module are started together once
(they are import-bound, ~0.5 s of CPU each) and the tests read their results.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import DEFAULT_BUCKETS, ConfigError, load_config
from monitor.durations import format_duration, parse_duration

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
ERROR_PREFIX = "synthetic-monitor: config error: "


def clean_env(**extra: str) -> dict[str, str]:
    """The inherited environment without anything the config loader reads, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "ASGARD_", "SYNTHETIC_MONITOR_")) and k != "PYTHONWARNINGS"
    }
    env.update(extra)
    return env


def base_doc() -> dict[str, Any]:
    return {
        "targets": [{"name": "mlflow", "kind": "mlflow", "url": "http://127.0.0.1:5000"}],
        "probes": [
            {"name": "read", "target": "mlflow", "scenario": "mlflow_read", "interval": "30s", "timeout": "10s"}
        ],
    }


def doc(edit: Callable[[dict[str, Any]], None]) -> str:
    data = base_doc()
    edit(data)
    return yaml.safe_dump(data, sort_keys=False)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit setting a dotted path like 'probes.0.interval' (creating mappings on the way)."""

    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[int(last) if last.isdigit() else last] = value

    return edit


def _add(path: str, item: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda data: data[path].append(item)


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        (" 30s ", 30.0),
        ("45", 45.0),
        ("2.5", 2.5),
        (45, 45.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "30s5", "5 minutes", "-5s", "1h 30m", True, None, [30]])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.5, "500ms"), (30, "30s"), (300, "5m"), (5400, "90m"), (3600, "1h"), (90, "90s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_durations_in_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(doc(lambda d: d["probes"][0].update(interval="1h30m", timeout=600, step_timeout="500ms")))
    probe = load_config(path, env={}).probes[0]
    assert (probe.interval, probe.timeout, probe.step_timeout) == (5400.0, 600.0, 0.5)


# --------------------------------------------------------------------------- defaults and environment


def test_defaults_with_no_file_and_empty_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://must-not-be-read:1")  # env= given: os.environ is ignored
    config = load_config(None, env={})
    assert config.listen == "0.0.0.0:9356"
    mlflow = config.target("mlflow")
    assert (mlflow.kind, mlflow.url, mlflow.auth) == ("mlflow", "http://localhost:5000", None)
    probes = {p.name: p for p in config.probes}
    assert {"mlflow_read", "mlflow_write"} <= set(probes)
    assert (probes["mlflow_read"].interval, probes["mlflow_read"].timeout) == (30.0, 10.0)
    assert (probes["mlflow_write"].interval, probes["mlflow_write"].timeout) == (300.0, 30.0)
    assert probes["mlflow_write"].options.experiment_name == "synthetic-monitor"
    assert (probes["mlflow_registry"].interval, probes["mlflow_registry"].options.model_name) == (
        300.0,
        "synthetic-monitor-probe",
    )
    assert config.metrics.buckets == list(DEFAULT_BUCKETS)
    assert config.alerting.failure_threshold == 2 and config.alerting.success_threshold == 2
    assert config.secret_values() == set()


def test_tracking_uri_from_env() -> None:
    config = load_config(None, env={"MLFLOW_TRACKING_URI": "http://mlflow.mlops.svc:5000/"})
    assert config.target("mlflow").url == "http://mlflow.mlops.svc:5000"


def test_asgard_url_from_env() -> None:
    # Without ASGARD_URL an MLflow-only team gets no Asgard probe (issue 23: no probe of what is not there).
    config = load_config(None, env={})
    assert [t.name for t in config.targets] == ["mlflow"]
    assert all(p.target == "mlflow" for p in config.probes)
    config = load_config(None, env={"ASGARD_URL": "http://asgard.mlops.svc:8000"})
    assert config.target("asgard").url == "http://asgard.mlops.svc:8000"
    assert any(p.target == "asgard" for p in config.probes)


def test_basic_auth_from_env() -> None:
    config = load_config(None, env={"MLFLOW_TRACKING_USERNAME": "probe", "MLFLOW_TRACKING_PASSWORD": "pw-1"})
    auth = config.target("mlflow").auth
    assert auth is not None
    assert auth.basic == ("probe", "pw-1") and auth.bearer is None
    # The password, and the basic-auth token a server might quote back.
    assert config.secret_values() == {"pw-1", base64.b64encode(b"probe:pw-1").decode()}


def test_bearer_token_from_env() -> None:
    config = load_config(None, env={"MLFLOW_TRACKING_TOKEN": "tok-1"})
    auth = config.target("mlflow").auth
    assert auth is not None
    assert auth.bearer == "tok-1" and auth.basic is None
    assert config.secret_values() == {"tok-1"}


def test_env_credentials_precedence_follows_mlflow() -> None:
    config = load_config(
        None,
        env={
            "MLFLOW_TRACKING_USERNAME": "probe",
            "MLFLOW_TRACKING_PASSWORD": "pw",
            "MLFLOW_TRACKING_TOKEN": "tok",
        },
    )
    auth = config.target("mlflow").auth
    assert auth is not None and auth.basic == ("probe", "pw")


def test_env_credentials_apply_to_file_targets_without_auth(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        doc(
            lambda d: d["targets"].append(
                {"name": "other", "kind": "mlflow", "url": "http://127.0.0.1:5001", "auth": {"token": "file-token"}}
            )
        )
    )
    config = load_config(path, env={"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"})
    assert config.target("mlflow").auth.basic == ("u", "p")  # type: ignore[union-attr]
    assert config.target("other").auth.bearer == "file-token"  # type: ignore[union-attr]


def test_config_path_from_env(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(doc(_set("listen", "127.0.0.1:9999")))
    assert load_config(None, env={"SYNTHETIC_MONITOR_CONFIG": str(path)}).listen == "127.0.0.1:9999"


@pytest.mark.parametrize(("interval", "timeout"), [("30s", 24.0), ("5m", 240.0), ("1s", 0.8), (10, 8.0)])
def test_timeout_defaults_to_80_percent_of_interval(tmp_path: Path, interval: object, timeout: float) -> None:
    path = tmp_path / "c.yaml"

    def edit(data: dict[str, Any]) -> None:
        data["probes"][0]["interval"] = interval
        del data["probes"][0]["timeout"]

    path.write_text(doc(edit))
    probe = load_config(path, env={}).probes[0]
    assert probe.timeout == pytest.approx(timeout)
    assert probe.deadline == pytest.approx(timeout)


def test_step_timeout_is_capped_at_the_timeout(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(doc(lambda d: d["probes"][0].update(interval="10s", timeout="9s", step_timeout="1m")))
    probe = load_config(path, env={}).probes[0]
    assert (probe.timeout, probe.step_timeout) == (9.0, 9.0)


def test_targets_without_probes_get_default_probes(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"targets": [{"name": "prod", "kind": "mlflow", "url": "http://127.0.0.1:5000"}]}))
    config = load_config(path, env={})
    assert [p.name for p in config.probes] == ["prod_read", "prod_write", "prod_registry"]
    registry = config.probes[2]
    assert (registry.scenario, registry.interval) == ("mlflow_registry", 300.0)
    assert registry.options.model_name == "synthetic-monitor-probe"


# --------------------------------------------------------------------------- secrets from files


def test_password_file_and_token_file_are_read(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("file-password\n")
    (tmp_path / "token").write_text("  file-token \n")
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "targets": [
                    {
                        "name": "a",
                        "kind": "mlflow",
                        "url": "http://127.0.0.1:5000",
                        "auth": {"username": "probe", "password_file": str(tmp_path / "password")},
                    },
                    {
                        "name": "b",
                        "kind": "mlflow",
                        "url": "http://127.0.0.1:5001",
                        "auth": {"token_file": str(tmp_path / "token")},
                    },
                ],
                "probes": [{"name": "p", "target": "a", "scenario": "mlflow_read"}],
            }
        )
    )
    config = load_config(path, env={"MLFLOW_TRACKING_TOKEN": "env-token-ignored"})
    assert config.target("a").auth.basic == ("probe", "file-password")  # type: ignore[union-attr]
    assert config.target("b").auth.bearer == "file-token"  # type: ignore[union-attr]
    assert {"file-password", "file-token"} <= config.secret_values()
    assert "file-password" not in repr(config) and "file-token" not in repr(config)


# --------------------------------------------------------------------------- in-process error messages


@dataclass(frozen=True)
class Bad:
    """One malformed config: its text, and what the one-line error must name."""

    id: str
    text: str | bytes
    field: str | None = None  # the dotted location, e.g. "probes[0].timeout"
    phrase: str | None = None  # for file-level problems with no field


def _missing_password_file(data: dict[str, Any]) -> None:
    data["targets"][0]["auth"] = {"username": "probe", "password_file": "/nonexistent/synthetic-monitor/password"}


def _duplicate_probe(data: dict[str, Any]) -> None:
    data["probes"].append(dict(data["probes"][0]))


def _duplicate_target(data: dict[str, Any]) -> None:
    data["targets"].append(dict(data["targets"][0], url="http://127.0.0.1:5001"))


def _wrong_kind(data: dict[str, Any]) -> None:
    data["targets"].append({"name": "asgard", "kind": "asgard", "url": "http://127.0.0.1:8000"})
    data["probes"][0]["target"] = "asgard"


def _no_timeout(data: dict[str, Any]) -> None:
    del data["probes"][0]["timeout"]


CORPUS = [
    Bad("targets_not_a_list", doc(_set("targets", "mlflow")), field="targets"),
    Bad("url_not_a_string", doc(_set("targets.0.url", 5000)), field="targets[0].url"),
    Bad("unknown_top_level_key", doc(_set("colour", "blue")), field="colour"),
    Bad(
        "unknown_auth_key",
        doc(_set("targets.0.auth", {"username": "u", "passwd": "x"})),
        field="targets[0].auth.passwd",
    ),
    Bad("negative_interval", doc(_set("probes.0.interval", -5)), field="probes[0].interval"),
    Bad("timeout_above_interval", doc(_set("probes.0.timeout", "40s")), field="probes[0].timeout"),
    Bad("duplicate_probe_names", doc(_duplicate_probe), field="probes[1].name"),
    Bad("duplicate_target_names", doc(_duplicate_target), field="targets[1].name"),
    Bad("probe_names_missing_target", doc(_set("probes.0.target", "nowhere")), field="probes[0].target"),
    Bad("scenario_wrong_target_kind", doc(_wrong_kind), field="probes[0].scenario"),
    Bad("unknown_scenario", doc(_set("probes.0.scenario", "mlflow_everything")), field="probes[0].scenario"),
    Bad("url_ftp", doc(_set("targets.0.url", "ftp://127.0.0.1/")), field="targets[0].url"),
    Bad("url_no_host", doc(_set("targets.0.url", "http://")), field="targets[0].url"),
    Bad("url_bad_port", doc(_set("targets.0.url", "http://127.0.0.1:99999")), field="targets[0].url"),
    Bad("password_file_unreadable", doc(_missing_password_file), field="targets[0].auth.password_file"),
    Bad("empty_file", "", phrase="the config file is empty"),
    Bad("not_yaml", "targets: [\n  {name: mlflow\n", phrase="not valid YAML at line"),
    Bad("top_level_list", "- listen: 0.0.0.0:9356\n", phrase="the top level must be a mapping"),
    Bad("bad_listen", doc(_set("listen", "localhost")), field="listen"),
    Bad("bad_log_level", doc(_set("log.level", "verbose")), field="log.level"),
    Bad(
        "unknown_option_key",
        doc(_set("probes.0.options", {"max_result": 5})),
        field="probes[0].options.max_result",
    ),
    Bad("buckets_not_increasing", doc(_set("metrics.buckets", [0.1, 1, 0.5])), field="metrics.buckets"),
]

# Further malformed configs, checked in-process (same loader, no subprocess cost).
MORE = [
    Bad("unknown_target_key", doc(_set("targets.0.timeout", "5s")), field="targets[0].timeout"),
    Bad("zero_interval", doc(_set("probes.0.interval", "0s")), field="probes[0].interval"),
    Bad("interval_bool", doc(_set("probes.0.interval", True)), field="probes[0].interval"),
    Bad("max_body_bytes_text", doc(_set("targets.0.max_body_bytes", "big")), field="targets[0].max_body_bytes"),
    Bad("unknown_alerting_key", doc(_set("alerting.failure_treshold", 3)), field="alerting.failure_treshold"),
    Bad("bad_duration", doc(_set("probes.0.interval", "5 minutes")), field="probes[0].interval"),
    Bad("zero_timeout", doc(_set("probes.0.timeout", 0)), field="probes[0].timeout"),
    Bad("url_port_not_a_number", doc(_set("targets.0.url", "http://127.0.0.1:50a0")), field="targets[0].url"),
    Bad("buckets_not_numbers", doc(_set("metrics.buckets", ["fast", "slow"])), field="metrics.buckets[0]"),
    Bad(
        "receiver_bad_url",
        doc(_set("alerting.receivers", [{"kind": "webhook", "url": "hooks.internal"}])),
        field="alerting.receivers[0].url",
    ),
    Bad("listen_port_out_of_range", doc(_set("listen", "0.0.0.0:70000")), field="listen"),
    Bad("listen_not_a_string", doc(_set("listen", 9356)), field="listen"),
    Bad("log_format", doc(_set("log.format", "xml")), field="log.format"),
    Bad("failure_threshold_zero", doc(_set("alerting.failure_threshold", 0)), field="alerting.failure_threshold"),
    Bad(
        "receiver_unknown_kind",
        doc(_set("alerting.receivers", [{"kind": "pager", "url": "http://x"}])),
        field="alerting.receivers[0].kind",
    ),
    Bad("probe_name_with_spaces", doc(_set("probes.0.name", "my probe!")), field="probes[0].name"),
    Bad("probe_without_target", doc(lambda d: d["probes"][0].pop("target")), field="probes[0].target"),
    Bad("no_targets", doc(_set("targets", [])), field="targets"),
    Bad("no_probes", doc(_set("probes", [])), field="probes"),
    Bad("negative_step_timeout", doc(_set("probes.0.step_timeout", "-1s")), field="probes[0].step_timeout"),
    Bad("nan_interval", doc(_set("probes.0.interval", float("nan"))), field="probes[0].interval"),
    Bad(
        "infinite_interval_default_timeout",
        doc(lambda d: (_no_timeout(d), _set("probes.0.interval", "inf")(d))),
        field="probes[0].interval",
    ),
    Bad(
        "ca_file_unreadable",
        doc(_set("targets.0.tls", {"ca_file": "/nonexistent/ca.pem"})),
        field="targets[0].tls.ca_file",
    ),
    Bad("headers_not_strings", doc(_set("targets.0.headers", {"X-Team": ["a"]})), field="targets[0].headers.X-Team"),
    # CR or LF in a header would split it on the wire (header injection): refused by field.
    Bad(
        "header_value_with_crlf",
        doc(_set("targets.0.headers", {"X-Team": "a\r\nX-Injected: 1"})),
        field="targets[0].headers.X-Team",
    ),
    Bad("header_value_with_lf", doc(_set("targets.0.headers", {"X-Team": "a\nb"})), field="targets[0].headers.X-Team"),
    Bad("header_name_not_a_token", doc(_set("targets.0.headers", {"X Team": "a"})), field="targets[0].headers.X Team"),
    Bad(
        "receiver_header_value_with_cr",
        doc(_set("alerting.receivers", [{"kind": "webhook", "url": "http://x", "headers": {"X-Key": "k\rv"}}])),
        field="alerting.receivers[0].headers.X-Key",
    ),
    Bad("token_with_lf", doc(_set("targets.0.auth", {"token": "abc\ndef"})), field="targets[0].auth.token"),
    Bad("target_kind_unknown", doc(_set("targets.0.kind", "kubeflow")), field="targets[0].kind"),
    Bad("buckets_empty", doc(_set("metrics.buckets", [])), field="metrics.buckets"),
    Bad("options_not_a_mapping", doc(_set("probes.0.options", [1, 2])), field="probes[0].options"),
    Bad(
        "option_value_out_of_range",
        doc(_set("probes.0.options", {"max_results": 0})),
        field="probes[0].options.max_results",
    ),
    Bad(
        "token_and_username",
        doc(_set("targets.0.auth", {"username": "u", "token": "t"})),
        field="targets[0].auth.token",
    ),
    Bad("password_without_username", doc(_set("targets.0.auth", {"password": "p"})), field="targets[0].auth.username"),
    Bad(
        "password_and_password_file",
        doc(_set("targets.0.auth", {"username": "u", "password": "p", "password_file": "/etc/hostname"})),
        field="targets[0].auth.password_file",
    ),
    Bad("not_utf8", b"targets: \xff\xfe\n", phrase="not a UTF-8 text file"),
    Bad("tabs_in_yaml", "targets:\n\t- name: x\n", phrase="not valid YAML"),
]


def _field_check(case: Bad, line: str, path: Path) -> None:
    if case.field is not None:
        assert f"{path}: {case.field}: " in line, f"expected the field {case.field!r} named in: {line}"
    else:
        assert case.phrase is not None and case.phrase in line, line


def _params(cases: list[Bad]) -> list[Any]:
    return [pytest.param(case, id=case.id) for case in cases]


def _write(directory: Path, case: Bad) -> Path:
    path = directory / f"{case.id}.yaml"
    if isinstance(case.text, bytes):
        path.write_bytes(case.text)
    else:
        path.write_text(case.text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", MORE, ids=[c.id for c in MORE])
def test_more_malformed_configs_fail_on_one_line(tmp_path: Path, case: Bad) -> None:
    path = _write(tmp_path, case)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")


@pytest.mark.parametrize("case", _params(MORE))
def test_more_malformed_configs_name_the_field(tmp_path: Path, case: Bad) -> None:
    path = _write(tmp_path, case)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    _field_check(case, str(info.value), path)


@pytest.mark.parametrize("key", ["password", "token"])
def test_config_error_never_echoes_a_secret(tmp_path: Path, key: str) -> None:
    path = tmp_path / "c.yaml"
    auth = {"username": "u", "password": 31415926} if key == "password" else {"token": 31415926}
    path.write_text(doc(_set("targets.0.auth", auth)))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert f"targets[0].auth.{key}" in str(info.value)
    assert "31415926" not in str(info.value)


def test_config_error_masks_url_userinfo(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(doc(_set("targets.0.url", "http://probe:s3cr3t-pw@127.0.0.1:99999")))
    message = str(pytest.raises(ConfigError, load_config, path, env={}).value)
    assert "targets[0].url" in message and "s3cr3t-pw" not in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.yaml", env={})


def test_one_error_counts_the_others(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(doc(lambda d: d["probes"][0].update(interval="x", name="bad name", colour=1)))
    message = str(pytest.raises(ConfigError, load_config, path, env={}).value)
    assert message.endswith("(and 2 more problems: `config validate --all` lists them)")


# --------------------------------------------------------------------------- the real command line


@dataclass
class Run:
    args: list[str]
    env: dict[str, str] = field(default_factory=clean_env)
    returncode: int = -1
    stdout: str = ""
    stderr: str = ""


def _execute(run: Run, cwd: Path) -> Run:
    proc = subprocess.run(
        [str(PYTHON if PYTHON.exists() else sys.executable), "-m", "monitor", *run.args],
        cwd=cwd,
        env=run.env,
        capture_output=True,
        text=True,
        timeout=50,
    )
    run.returncode, run.stdout, run.stderr = proc.returncode, proc.stdout, proc.stderr
    return run


CANARIES = {
    "inline": "CANARY-inline-4f1c",
    "file": "CANARY-file-9b2e",
    "env": "CANARY-env-77d0",
    "url": "CANARY-url-3a51",
    "token_env": "CANARY-token-c0de",
    "receiver_url": "CANARY-recv-5e11",
    "header": "CANARY-header-a9a9",
}


def _show_config(directory: Path) -> Path:
    (directory / "password").write_text(CANARIES["file"] + "\n")
    path = directory / "show.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "targets": [
                    {
                        "name": "inline",
                        "kind": "mlflow",
                        "url": "http://127.0.0.1:5000",
                        "auth": {"username": "probe", "password": CANARIES["inline"]},
                    },
                    {
                        "name": "from_file",
                        "kind": "mlflow",
                        "url": "http://127.0.0.1:5001",
                        "auth": {"username": "probe", "password_file": str(directory / "password")},
                    },
                    {"name": "from_env", "kind": "mlflow", "url": "http://127.0.0.1:5002"},
                    {
                        "name": "userinfo",
                        "kind": "mlflow",
                        "url": f"http://probe:{CANARIES['url']}@127.0.0.1:5003",
                        "auth": {"username": "probe", "password": "x"},
                    },
                    {
                        "name": "header",
                        "kind": "mlflow",
                        "url": "http://127.0.0.1:5004",
                        "auth": {"token": "x"},
                        "headers": {"Authorization": f"Bearer {CANARIES['header']}"},
                    },
                ],
                "probes": [{"name": "read", "target": "inline", "scenario": "mlflow_read", "interval": "1m"}],
                "alerting": {
                    "receivers": [
                        {"kind": "webhook", "url": f"http://hook:{CANARIES['receiver_url']}@hooks.internal/alerts"}
                    ]
                },
            },
            sort_keys=False,
        )
    )
    return path


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every subprocess of this module, run concurrently once."""
    directory = tmp_path_factory.mktemp("cli")
    runs: dict[str, Run] = {}
    for case in CORPUS:
        runs[f"validate:{case.id}"] = Run(["config", "validate", str(_write(directory, case))])
    good = directory / "good.yaml"
    good.write_text(yaml.safe_dump(base_doc()))
    runs["validate:good"] = Run(["config", "validate", str(good)])
    show = _show_config(directory)
    runs["show:file"] = Run(
        ["config", "show", str(show)],
        env=clean_env(MLFLOW_TRACKING_USERNAME="envuser", MLFLOW_TRACKING_PASSWORD=CANARIES["env"]),
    )
    runs["show:defaults"] = Run(
        ["config", "show", "--format", "json"],
        env=clean_env(
            MLFLOW_TRACKING_TOKEN=CANARIES["token_env"],
            MLFLOW_TRACKING_URI=f"http://probe:{CANARIES['url']}@mlflow.svc:5000",
        ),
    )
    with ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2) * 2)) as pool:
        list(pool.map(lambda run: _execute(run, directory), runs.values()))
    return runs


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_validate_rejects_malformed_config(cli: dict[str, Run], case: Bad) -> None:
    run = cli[f"validate:{case.id}"]
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    assert len(lines[0]) < 400, lines[0]


@pytest.mark.parametrize("case", _params(CORPUS))
def test_validate_names_the_field(cli: dict[str, Run], case: Bad) -> None:
    run = cli[f"validate:{case.id}"]
    line = run.stderr.strip()
    path = Path(run.args[-1])
    _field_check(case, line.removeprefix(ERROR_PREFIX), path)


def test_validate_good_file(cli: dict[str, Run]) -> None:
    run = cli["validate:good"]
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.strip().endswith(": ok (1 targets, 1 probes)")


def test_show_redacts_secrets_inline_file_env_and_url(cli: dict[str, Run]) -> None:
    run = cli["show:file"]
    assert run.returncode == 0, run.stderr
    for name in ("inline", "file", "env", "url"):
        assert CANARIES[name] not in run.stdout, f"{name} secret shown"
        assert CANARIES[name] not in run.stderr
    shown = yaml.safe_load(run.stdout)
    targets = {t["name"]: t for t in shown["targets"]}
    assert targets["inline"]["auth"] == {"username": "probe", "password": "**********"}
    assert targets["from_file"]["auth"]["password"] == "**********"
    assert targets["from_env"]["auth"] == {"username": "envuser", "password": "**********"}
    assert targets["userinfo"]["url"].endswith("@127.0.0.1:5003") and "probe:" not in targets["userinfo"]["url"]
    assert shown["probes"][0]["interval"] == "1m" and shown["probes"][0]["timeout"] == "48s"


def test_show_defaults_redacts_env_token_and_uri_password(cli: dict[str, Run]) -> None:
    import json

    run = cli["show:defaults"]
    assert run.returncode == 0, run.stderr
    assert CANARIES["token_env"] not in run.stdout
    assert CANARIES["url"] not in run.stdout
    shown = json.loads(run.stdout)
    mlflow = next(t for t in shown["targets"] if t["name"] == "mlflow")
    assert mlflow["auth"] == {"token": "**********"}
    assert "mlflow.svc:5000" in mlflow["url"]


def test_show_redacts_receiver_url_password(cli: dict[str, Run]) -> None:
    run = cli["show:file"]
    assert run.returncode == 0, run.stderr
    assert CANARIES["receiver_url"] not in run.stdout


@pytest.mark.integration
def test_show_redacts_authorization_header(cli: dict[str, Run]) -> None:
    run = cli["show:file"]
    assert run.returncode == 0, run.stderr
    assert CANARIES["header"] not in run.stdout
