"""Issue 18, "state file kept safe": each test failed on the code before its fix.

- a state file that cannot be used (not JSON, JSON of the wrong shape, unreadable) is moved
  aside to `<name>.corrupt-<timestamp>` (before: overwritten by the next save), with an
  error log and synthetic_monitor_state_file_errors_total{reason};
- restore is all or nothing: a snapshot that fails half-way leaves the engine as it was;
- a save fsyncs the directory after the rename.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from prometheus_client import CollectorRegistry

from monitor.alerting import state as state_module
from monitor.alerting.sink import AlertSink
from monitor.alerting.state import save_state
from tests.test_alert_engine import PROBE_FAILING, PROBES, T0, Clock, cfg, engine, fail, run


def errors(registry: CollectorRegistry, reason: str) -> float | None:
    return registry.get_sample_value("synthetic_monitor_state_file_errors_total", {"reason": reason})


async def _firing_state_file(path: Path) -> dict[str, Any]:
    """A good state file holding one firing alert, written by a real sink."""
    clock = Clock()
    sink = AlertSink(cfg(state_file=str(path)), CollectorRegistry(), clock=clock)
    await sink.start(PROBES)
    sink.handle(fail())
    clock.now += 30
    sink.handle(fail())
    await sink.stop()
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize(
    "content, reason",
    [
        (b'{"format": 1, "saved_at": 17', "invalid_json"),  # cut off mid-write by another tool
        (b"[1, 2, 3]", "wrong_shape"),
        (b'{"format": 1, "saved_at": 1, "states": [{"alertname": "x"}]}', "wrong_shape"),
        (b'{"format": 1, "saved_at": 1, "states": ["not an object"]}', "wrong_shape"),
        (b"\xff\xfe not utf-8", "unreadable"),
    ],
    ids=["truncated", "list", "missing-keys", "item-not-object", "not-utf8"],
)
async def test_an_unusable_state_file_is_moved_aside_logged_and_counted(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "alerts.json"
    path.write_bytes(content)
    registry = CollectorRegistry()
    sink = AlertSink(cfg(state_file=str(path)), registry, clock=Clock())
    assert errors(registry, reason) == 0  # the series exist from start
    with structlog.testing.capture_logs() as logs:
        await sink.start(PROBES)
    await sink.stop()
    kept = list(tmp_path.glob("alerts.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == content  # the bad file, byte for byte
    assert json.loads(path.read_text())["format"] == 1  # a fresh file in its place
    assert errors(registry, reason) == 1
    (record,) = [r for r in logs if r["event"] == "alert_state_unusable"]
    assert record["log_level"] == "error" and record["reason"] == reason
    assert record["moved_to"] == str(kept[0])


async def test_a_good_state_file_is_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    await _firing_state_file(path)
    registry = CollectorRegistry()
    sink = AlertSink(cfg(state_file=str(path)), registry, clock=Clock())
    await sink.start(PROBES)
    assert [a.name for a in sink.firing()] == [PROBE_FAILING]
    await sink.stop()
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert all(errors(registry, r) == 0 for r in state_module.REASONS)


async def test_restore_is_all_or_nothing(tmp_path: Path) -> None:
    data = await _firing_state_file(tmp_path / "alerts.json")
    eng = engine(receivers=[{"kind": "webhook", "url": "http://127.0.0.1:9/hook"}])
    eng.observe(fail(probe="asgard_api", target="asgard", scenario="asgard"), T0)
    eng.observe(fail(probe="asgard_api", target="asgard", scenario="asgard"), T0 + 30)
    before = [(a.name, a.labels["probe"]) for a in eng.firing()]
    assert before == [(PROBE_FAILING, "asgard_api")]
    version = eng.version
    # Good states, then a broken undelivered notice: the engine must not keep the new states.
    broken = dict(data, undelivered=[{"receiver": "webhook", "labels": {}, "starts_at": 1, "ends_at": "x"}])
    with pytest.raises((ValueError, KeyError, TypeError)):
        eng.restore(broken, T0 + 40)
    assert [(a.name, a.labels["probe"]) for a in eng.firing()] == before
    assert eng.version == version


def test_a_save_fsyncs_the_directory_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src: Any, dst: Any) -> None:
        calls.append("replace")
        real_replace(src, dst)

    def fsync(fd: int) -> None:
        calls.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    monkeypatch.setattr(state_module.os, "replace", replace)
    monkeypatch.setattr(state_module.os, "fsync", fsync)
    save_state(tmp_path / "alerts.json", {"format": 1})
    assert calls == ["fsync-file", "replace", "fsync-dir"]


async def test_a_firing_alerts_streak_is_written_at_most_every_churn_interval(tmp_path: Path) -> None:
    """In a wide outage every run of 1,000 failing probes changed the engine, and the whole
    2 MB state was written every second. A transition (fire, resolve) is written at once;
    the streak count of an alert already firing only every `churn_write_interval`."""
    path = tmp_path / "alerts.json"
    clock = Clock()
    sink = AlertSink(cfg(state_file=str(path)), CollectorRegistry(), clock=clock)
    sink.state_write_interval = 0.0

    async def writes_after(result: Any) -> int:
        sink.handle(result)
        if sink._writer is not None:
            await sink._writer.flush()
        return sink._writer.writes if sink._writer is not None else 0

    def saved_bad() -> list[int]:
        return [s["bad"] for s in json.loads(path.read_text())["states"]]

    await sink.start(PROBES)
    await writes_after(fail())
    clock.now += 30
    fired = await writes_after(fail())  # the alert fires: written at once
    assert saved_bad() == [2]
    for _ in range(10):
        clock.now += 1
        assert await writes_after(fail()) == fired  # the streak of a firing alert: no write per run
    clock.now += sink.churn_write_interval
    assert await writes_after(fail()) == fired + 1  # after the interval the count goes out
    assert saved_bad() == [13]
    clock.now += 1
    assert await writes_after(run()) == fired + 1  # one good run of two: a streak change only
    clock.now += 1
    assert await writes_after(run()) == fired + 2  # resolved: a transition, written at once
    assert saved_bad() == []
    await sink.stop()


def test_the_state_is_encoded_item_by_item_as_json_dumps_would_in_one_call() -> None:
    """One json.dumps call of 3,000 firing alerts held the GIL for 35-50 ms (the probes'
    loop stopped meanwhile); the item-by-item encoding must give the very same text."""
    data: dict[str, Any] = {
        "format": 1,
        "saved_at": 1.5,
        "states": [{"z": i, "labels": {"b": 'é\\"', "a": [1, 2.5, None]}, "notified": {}} for i in range(50)],
        "undelivered": [],
        "quorum": [{"k": "v"}],
        "maintenance": {"windows": [{"id": "x"}]},
    }
    assert state_module.encode_state(data) == json.dumps(data, separators=(",", ":"), sort_keys=True)


async def test_a_write_encodes_again_only_the_states_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the fleet's wide outage the writer thread encoded all 3,000 firing alerts (3 MB)
    every second while they fired, though a second of runs changes about a tenth of them.
    Unchanged states keep their row object and its text;
    the file stays exactly what one json.dumps of the snapshot gives."""
    path = tmp_path / "alerts.json"
    clock = Clock()
    probes = [(f"p{i:02d}", "mlflow") for i in range(20)]
    sink = AlertSink(cfg(state_file=str(path)), CollectorRegistry(), clock=clock)
    sink.state_write_interval = 0.0
    await sink.start(probes)
    for _ in range(2):
        for probe, _target in probes:
            sink.handle(fail(probe=probe))
        clock.now += 30
    await sink.flush_state()
    assert len(json.loads(path.read_text())["states"]) == 20

    encoded: list[Any] = []
    real = state_module._dumps
    monkeypatch.setattr(state_module, "_dumps", lambda value: encoded.append(value) or real(value))
    clock.now += sink.churn_write_interval  # so the streak change below is written
    sink.handle(run(probe="p07"))  # one state changes (a good run of two)
    await sink.flush_state()
    rows = [item for item in encoded if isinstance(item, dict) and "alertname" in item]
    assert [(r["probe"], r["good"]) for r in rows] == [("p07", 1)]  # before: all 20 states
    assert path.read_text() == json.dumps(sink._snapshot(), separators=(",", ":"), sort_keys=True)
    await sink.stop()


async def test_the_writer_takes_and_encodes_the_state_on_the_loop_in_slices_and_its_thread_only_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread that wants the GIL for CPU work costs the event loop up to the switch
    interval (5 ms) at every system call the loop makes (the convoy effect), and one pass
    over 3,000 states held the loop up to 130 ms: the snapshot and its encoding run on the
    loop, handing it back every SNAPSHOT_SLICE states; the thread only writes and fsyncs."""
    rows = [{"alertname": "SyntheticProbeFailing", "probe": f"p{i}", "n": i} for i in range(1000)]
    ticks = 0
    taken: list[int] = []  # ticks so far as each row is taken into the snapshot

    def snapshot() -> Any:
        out = []
        for index, row in enumerate(rows):
            if index and index % state_module.SNAPSHOT_SLICE == 0:
                yield
            taken.append(ticks)
            out.append(row)
        return {"format": 1, "states": out}

    writer = state_module.StateWriter(tmp_path / "alerts.json", snapshot)
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    encoded: list[tuple[int, int]] = []  # (thread, ticks so far) at each encoding
    real = state_module._dumps
    monkeypatch.setattr(
        state_module, "_dumps", lambda value: encoded.append((threading.get_ident(), ticks)) or real(value)
    )
    task = asyncio.create_task(ticker())
    writer.mark()
    await writer.flush()
    stop.set()
    await task
    slices = len(rows) // state_module.SNAPSHOT_SLICE
    assert len(set(taken)) >= slices
    assert {thread for thread, _ in encoded} == {threading.get_ident()}  # before: the writer thread
    assert len({at for _, at in encoded}) >= slices
    assert json.loads((tmp_path / "alerts.json").read_text())["states"] == rows
