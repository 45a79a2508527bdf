"""Fleet mode without processes: rendezvous sharding, identity, labels, `config show`, `check`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from monitor.config import ConfigError, load_config
from monitor.fleet import alerting_for, fleet_status, fleet_webhook_warning, identity, run_member
from monitor.shard import assignment, ordinal, owners, probes_of
from tests.servers import REPO

PROBES = [f"probe_{i:04d}" for i in range(3000)]


@pytest.mark.parametrize("count,k", [(1, 1), (3, 1), (3, 2), (5, 3), (7, 7)])
def test_every_probe_runs_on_exactly_k_distinct_members(count: int, k: int) -> None:
    for probe in PROBES[:500]:
        members = owners(probe, count, k)
        assert len(members) == len(set(members)) == k
        assert all(0 <= m < count for m in members)


def test_the_load_is_spread_evenly() -> None:
    load = Counter(m for p in PROBES for m in owners(p, 5, 2))
    expected = len(PROBES) * 2 / 5
    assert set(load) == set(range(5))
    assert all(abs(n - expected) < expected * 0.1 for n in load.values()), load


@pytest.mark.parametrize("k", [1, 2])
def test_adding_a_member_moves_about_one_nth(k: int) -> None:
    before = assignment(PROBES, 4, k)
    after = assignment(PROBES, 5, k)
    moved = sum(1 for p in PROBES if before[p] != after[p])
    # Only probes the new member wins change hands: about k/5 of them, and no other shuffle.
    assert abs(moved / len(PROBES) - k / 5) < 0.05, moved
    for p in PROBES:
        if before[p] != after[p]:  # the new member took exactly one seat, nobody else moved
            assert 4 in after[p] and len(set(before[p]) - set(after[p])) == 1


def test_members_of_one_fleet_cover_every_probe_k_times() -> None:
    names = PROBES[:300]
    runs = Counter(p for member in range(3) for p in probes_of(member, names, 3, 2))
    assert set(runs) == set(names) and set(runs.values()) == {2}


def test_statefulset_ordinal() -> None:
    assert ordinal("synthetic-monitor-2") == 2
    assert ordinal("synthetic-monitor-12") == 12
    assert ordinal("synthetic-monitor") is None
    assert ordinal("") is None


def _write(tmp_path: Path, extra: dict[str, object]) -> Path:
    document = {
        "targets": [{"name": "mlflow", "kind": "mlflow", "url": "http://127.0.0.1:1"}],
        "probes": [
            {"name": f"p{i}", "target": "mlflow", "scenario": "mlflow_read", "interval": "30s"} for i in range(12)
        ],
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_location_and_replica_come_from_the_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, {})
    config = load_config(path, env={"SYNTHETIC_MONITOR_LOCATION": "eu-west", "POD_NAME": "synthetic-monitor-1"})
    assert identity(config) == {"location": "eu-west", "replica": "synthetic-monitor-1"}
    # The file wins over the environment.
    config = load_config(
        _write(tmp_path, {"location": "sidecar", "replica": "a"}), env={"SYNTHETIC_MONITOR_LOCATION": "x"}
    )
    assert identity(config) == {"location": "sidecar", "replica": "a"}


def test_an_odd_shell_hostname_does_not_break_a_lone_daemon(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, {}), env={"HOSTNAME": "my laptop (2)"})
    assert config.replica is None
    with pytest.raises(ConfigError, match="replica"):
        load_config(_write(tmp_path, {}), env={"POD_NAME": "bad name"})


def test_the_shard_index_is_the_statefulset_ordinal(tmp_path: Path) -> None:
    path = _write(tmp_path, {"shard": {"count": 3, "replicas_per_probe": 2}})
    config = load_config(path, env={"POD_NAME": "synthetic-monitor-2"})
    assert config.shard is not None and config.shard.index == 2
    own = [p.name for p in config.own_probes()]
    assert own == probes_of(2, [p.name for p in config.probes], 3, 2)
    assert 0 < len(own) < 12
    status = fleet_status(config)["shard"]
    assert status["probes"] == own and status["assignment"]["p0"] == owners("p0", 3, 2)
    shown = config.redacted()
    assert shown["shard"]["probes"] == own and shown["shard"]["index"] == 2


@pytest.mark.parametrize(
    "extra,env,field",
    [
        ({"shard": {"count": 3}}, {"POD_NAME": "monitor"}, "shard.index"),
        ({"shard": {"count": 3}}, {"POD_NAME": "monitor-3"}, "shard.index"),
        ({"shard": {"count": 2, "replicas_per_probe": 3, "index": 0}}, {}, "shard.replicas_per_probe"),
        ({"shard": {"count": 2, "index": 2}}, {}, "shard.index"),
        ({"peers": []}, {}, "peers.urls"),
        ({"peers": ["ftp://x"]}, {}, "peers.urls"),
        ({"peers": {"service": "no-port"}}, {}, "peers.service"),
        ({"location": "a b"}, {}, "location"),
        ({"location": "a", "alerting": {"labels": {"location": "b"}}}, {}, "alerting.labels.location"),
    ],
)
def test_fleet_config_errors_name_the_field(
    tmp_path: Path, extra: dict[str, object], env: dict[str, str], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, extra), env=env)
    message = str(caught.value)
    assert f": {field}" in message and "\n" not in message, message


def test_location_is_a_label_of_every_pushed_alert_but_the_replica_is_not(tmp_path: Path) -> None:
    one = load_config(
        _write(tmp_path, {"location": "in-cluster", "alerting": {"labels": {"team": "ml"}}}),
        env={"POD_NAME": "synthetic-monitor-0"},
    )
    two = load_config(
        _write(tmp_path, {"location": "in-cluster", "alerting": {"labels": {"team": "ml"}}}),
        env={"POD_NAME": "synthetic-monitor-1"},
    )
    assert alerting_for(one).labels == alerting_for(two).labels == {"team": "ml", "location": "in-cluster"}
    assert one.alerting.labels == {"team": "ml"}  # the config itself is not changed
    plain = load_config(_write(tmp_path, {}), env={})
    assert alerting_for(plain).labels == {}


def test_alert_label_sets_of_two_replicas_are_identical(tmp_path: Path) -> None:
    """What Alertmanager dedups on: same probe, same location, two replicas -> same labels."""
    from monitor.alerting.engine import AlertEngine
    from monitor.results import ProbeResult, Reason, StepResult

    labels = []
    for pod in ("synthetic-monitor-0", "synthetic-monitor-1"):
        config = load_config(_write(tmp_path, {"location": "eu-west"}), env={"POD_NAME": pod})
        engine = AlertEngine(alerting_for(config).model_copy(update={"startup_grace": 0}), now=0.0)
        failed = ProbeResult(
            probe="p0",
            target="mlflow",
            scenario="mlflow_read",
            started_at=0.0,
            duration_seconds=0.1,
            steps=(StepResult("health", ok=False, duration_seconds=0.1, reason=Reason.UNREACHABLE, error="refused"),),
            timeout_seconds=1.0,
        )
        alerts = engine.observe(failed, 1.0) + engine.observe(failed, 2.0)
        labels.append({a.name: a.labels for a in alerts})
    assert labels[0] == labels[1]
    assert labels[0]["SyntheticProbeFailing"]["location"] == "eu-west"
    assert not any(v.startswith("synthetic-monitor-") for v in labels[0]["SyntheticProbeFailing"].values())


def test_webhooks_in_a_fleet_are_warned_about(tmp_path: Path) -> None:
    receivers = {"receivers": [{"kind": "webhook", "url": "http://127.0.0.1:1/hook", "name": "chat"}]}
    fleet = load_config(_write(tmp_path, {"peers": ["http://127.0.0.1:2"], "alerting": receivers}), env={})
    message = fleet_webhook_warning(fleet)
    assert message is not None and "chat" in message and "Alertmanager" in message
    alone = load_config(_write(tmp_path, {"alerting": receivers}), env={})
    assert fleet_webhook_warning(alone) is None


def test_write_runs_carry_the_member_only_in_a_fleet(tmp_path: Path) -> None:
    fleet = load_config(_write(tmp_path, {"shard": {"count": 2}}), env={"POD_NAME": "synthetic-monitor-1"})
    assert run_member(fleet) == "synthetic-monitor-1"
    assert run_member(load_config(_write(tmp_path, {}), env={"POD_NAME": "synthetic-monitor-1"})) == ""


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


@pytest.mark.integration
def test_config_show_and_check_say_who_runs_what(tmp_path: Path) -> None:
    path = _write(tmp_path, {"location": "ingress", "shard": {"count": 3, "replicas_per_probe": 2}})
    env = {"POD_NAME": "synthetic-monitor-0"}
    shown = _cli("config", "show", str(path), "--format", "json", env=env)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["shard"]["probes"] == probes_of(0, [f"p{i}" for i in range(12)], 3, 2)
    checked = _cli("check", "--config", str(path), "--probe", "p0", "--format", "json", env=env)
    assert checked.returncode == 1, checked.stderr  # nothing listens on port 1
    report = json.loads(checked.stdout)
    assert report["location"] == "ingress" and report["replica"] == "synthetic-monitor-0"
    assert report["probes"][0]["members"] == owners("p0", 3, 2)
    table = _cli("check", "--config", str(path), "--probe", "p0", env=env)
    assert "location: ingress, replica: synthetic-monitor-0, shard member 0 of 3" in table.stdout


@pytest.mark.integration
def test_the_daemon_warns_at_start_about_webhooks_in_a_fleet(tmp_path: Path) -> None:
    from tests.servers import DaemonProcess

    path = _write(
        tmp_path,
        {
            "location": "sidecar",
            "peers": ["http://127.0.0.1:1"],
            "alerting": {"receivers": [{"kind": "webhook", "url": "http://127.0.0.1:1/hook"}]},
        },
    )
    daemon = DaemonProcess(path, tmp_path).start()
    try:
        import httpx

        status = httpx.get(f"{daemon.url}/status", timeout=10).json()
        assert status["location"] == "sidecar" and status["fleet"]["peers"]["urls"] == ["http://127.0.0.1:1"]
    finally:
        daemon.stop()
    lines = [json.loads(line) for line in daemon.log_text().splitlines() if line.startswith("{")]
    warned = [line for line in lines if line.get("event") == "fleet_webhook_duplicates"]
    assert len(warned) == 1 and "Alertmanager" in warned[0]["message"]
