"""The fault matrix, end to end: the real daemon (a subprocess) probing the real MLflow
server through our fault-injecting proxy (tests/faultproxy.py).

One daemon and one proxy serve the whole module; each case flips the proxy's switch (or
reloads the daemon's config for the faults a proxy cannot fake: an unresolvable name, an
untrusted TLS certificate), then checks, through the daemon's own HTTP interface:

- the first run that starts after the fault is set fails with the documented reason at the
  step whose request met the fault (read from /status, as an operator would);
- /healthz stays 200 and /status shows the error text; the step's failure counter in
  /metrics went up;
- the first run that starts after the fault is cleared passes.

`python -m tests.test_fault_matrix` prints the fault table for the README.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.faultproxy import FaultProxy, make_self_signed, server_tls_context
from tests.servers import REPO, DaemonProcess, MlflowServer
from tests.test_daemon import sample, scrape, wait_for

pytestmark = pytest.mark.timeout(90)

INTERVAL = "1s"
TIMEOUT = "900ms"  # a run must end within 90% of its interval
WRITE_INTERVAL = "2s"  # the write probe's deadline plus its runs_delete budget (900ms each)
EXPERIMENT = "fault-matrix"
UNRESOLVABLE_HOST = "synthetic-monitor-fault.invalid"
METRIC = "synthetic_probe_value"
MB = 1024 * 1024


# --------------------------------------------------------------------------- the daemon under test


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Matrix:
    daemon: DaemonProcess
    proxy: FaultProxy
    tls_front: FaultProxy
    ca_file: Path
    config_path: Path
    current: dict[str, Any] = field(default_factory=dict)
    clean: bool = False  # the last case ended at baseline with its probe passing again
    seen: set[str] = field(default_factory=set)  # reasons the cases observed

    # -- configuration -----------------------------------------------------------------

    def document(self, url: str, ca_file: Path | None = None) -> dict[str, Any]:
        target: dict[str, Any] = {"name": "mlflow", "kind": "mlflow", "url": url}
        if ca_file is not None:
            target["tls"] = {"ca_file": str(ca_file)}
        return {
            "log": {"format": "json", "level": "info"},
            "targets": [target],
            "probes": [
                {
                    "name": "read",
                    "target": "mlflow",
                    "scenario": "mlflow_read",
                    "interval": INTERVAL,
                    "timeout": TIMEOUT,
                },
                {
                    "name": "write",
                    "target": "mlflow",
                    "scenario": "mlflow_write",
                    "interval": WRITE_INTERVAL,
                    "timeout": TIMEOUT,
                    "options": {"experiment_name": EXPERIMENT},
                },
            ],
        }

    def write(self, url: str, ca_file: Path | None = None) -> None:
        self.current = self.document(url, ca_file)
        self.config_path.write_text(yaml.safe_dump(self.current))

    def reload(self, url: str, ca_file: Path | None = None) -> None:
        self.write(url, ca_file)
        answer = httpx.post(f"{self.daemon.url}/-/reload", timeout=10)
        assert answer.status_code == 200, answer.text

    def at_baseline(self) -> bool:
        return self.current == self.document(self.proxy.url)

    def baseline(self) -> None:
        """Pass-through proxy, daemon pointed at it, both probes passing."""
        self.proxy.clear()
        self.tls_front.clear()
        if self.clean and self.at_baseline():
            return  # the previous case already saw its probe pass again after clearing
        if not self.at_baseline():
            self.reload(self.proxy.url)
        since = time.time()
        for probe in ("read", "write"):
            wait_for(
                lambda probe=probe: (r := self.last(probe)) and r["started_at"] > since and r["ok"],
                10,
                f"{probe} passing at baseline (last: {self.last(probe)})",
            )

    # -- observation -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.daemon.url}/status", timeout=5)
        assert answer.status_code == 200
        return answer.json()

    def last(self, probe: str) -> dict[str, Any] | None:
        return next(p["last"] for p in self.status()["probes"] if p["name"] == probe)

    def healthz(self) -> int:
        return httpx.get(f"{self.daemon.url}/healthz", timeout=5).status_code

    def runs_after(self, probe: str, after: float, count: int = 1, timeout: float = 12.0) -> list[dict[str, Any]]:
        """The first `count` runs of `probe` that started after `after`, oldest first.

        Polls /status (the last result, plus the failures ring, so nothing is missed) until
        `count` such runs are complete. Runs of one probe never overlap, so the first one
        seen complete is the first one started.
        """
        seen: dict[float, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            candidates = [p["last"] for p in status["probes"] if p["name"] == probe and p["last"]]
            candidates += [f for f in status["recent_failures"] if f["name"] == probe]
            for run in candidates:
                if run["started_at"] > after:
                    seen[run["started_at"]] = run
            if len(seen) >= count:
                return [seen[k] for k in sorted(seen)][:count]
            assert self.healthz() == 200, "/healthz must stay 200 while the fault lasts"
            time.sleep(0.1)
        raise AssertionError(f"only {len(seen)} of {count} runs of {probe!r} after the change within {timeout}s")


# --------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    id: str
    fault: str  # how the README names it
    probe: str  # "read" (mlflow_read) or "write" (mlflow_write)
    step: str
    reason: str
    text: tuple[str, ...]  # in the error text /status shows
    apply: Callable[[Matrix], None]
    clear: Callable[[Matrix], None] = lambda m: m.proxy.clear()
    memory: str | None = None  # "rss" or "peak": bound the daemon's memory growth
    bug: str | None = None  # a known monitor bug: the case is xfail(strict)


def fault(kind: str, **params: Any) -> Callable[[Matrix], None]:
    return lambda m: m.proxy.set_fault(kind, **params)


def _unresolvable(m: Matrix) -> None:
    m.reload(f"http://{UNRESOLVABLE_HOST}:{m.proxy.port}")


CASES: list[Case] = [
    Case(
        "connection_refused",
        "connection refused (nothing listens)",
        "read",
        "health",
        "unreachable",
        ("cannot connect",),
        lambda m: m.proxy.refuse(),
        lambda m: m.proxy.accept(),
    ),
    Case(
        "unresolvable_name",
        "a host name that does not resolve",
        "read",
        "health",
        "unreachable",
        ("cannot connect",),
        _unresolvable,
        lambda m: m.reload(m.proxy.url),
    ),
    Case(
        "accept_never_answer",
        "connection accepted, request never answered",
        "read",
        "experiments_search",
        "timeout",
        ("no complete response within",),
        fault("hang", path="/experiments/search"),
    ),
    Case(
        "body_trickles",
        "headers sent, then the body trickles slower than the deadline",
        "write",
        "runs_get",
        "timeout",
        ("no complete response within",),
        fault("trickle", path="/runs/get"),
    ),
    Case(
        "closed_without_response",
        "connection closed with no response (worker killed mid-request)",
        "write",
        "runs_create",
        "worker_failure",
        ("connection closed by the server",),
        fault("close", path="/runs/create"),
    ),
    Case(
        "reset_mid_body",
        "TCP reset in the middle of the body",
        "write",
        "runs_log_metric",
        "worker_failure",
        ("/runs/log-metric",),
        fault("reset", path="/runs/log-metric"),
    ),
    Case(
        "http_500",
        "HTTP 500",
        "write",
        "experiment_get_or_create",
        "http_error",
        ("HTTP 500", "INTERNAL_ERROR"),
        fault("status", status=500, path="/experiments/get-by-name"),
    ),
    Case(
        "http_502",
        "HTTP 502",
        "read",
        "health",
        "worker_failure",
        ("HTTP 502", "Bad Gateway"),
        fault("status", status=502, path="/health"),
    ),
    Case(
        "http_503",
        "HTTP 503",
        "write",
        "runs_update",
        "worker_failure",
        ("HTTP 503",),
        fault("status", status=503, path="/runs/update"),
    ),
    Case(
        "http_504",
        "HTTP 504",
        "read",
        "registered_models_search",
        "worker_failure",
        ("HTTP 504",),
        fault("status", status=504, path="/registered-models/search"),
    ),
    Case(
        "http_401",
        "HTTP 401",
        "read",
        "experiments_search",
        "http_error",
        ("HTTP 401", "check the target's credentials"),
        fault("status", status=401, path="/experiments/search"),
    ),
    Case(
        "http_403_invalid_host",
        'HTTP 403 "Invalid Host header - possible DNS rebinding attack detected"',
        "read",
        "health",
        "http_error",
        ("HTTP 403", "Invalid Host header", "--allowed-hosts"),
        fault("status", status=403),
    ),
    Case(
        "http_403_permission_denied",
        'HTTP 403 "Permission denied" (basic-auth app)',
        "write",
        "runs_log_parameter",
        "http_error",
        ("HTTP 403", "Permission denied"),
        fault("status", status=403, body="Permission denied", path="/runs/log-parameter"),
    ),
    Case(
        "html_200",
        "200 with an HTML page",
        "read",
        "experiments_search",
        "invalid_response",
        ("expected JSON, got HTML", "Sign in"),
        fault("html", path="/experiments/search"),
    ),
    Case(
        "malformed_json_200",
        "200 with malformed JSON",
        "write",
        "runs_get",
        "invalid_response",
        ("expected JSON, got malformed JSON",),
        fault("malformed_json", path="/runs/get"),
    ),
    Case(
        "wrong_shape_list",
        "200 with valid JSON of the wrong shape (a list)",
        "read",
        "experiments_search",
        "invalid_response",
        ("expected a JSON object, got list",),
        fault("json", json=[{"experiment_id": "0"}], path="/experiments/search"),
    ),
    Case(
        "wrong_shape_object",
        '200 with valid JSON of the wrong shape ({"unexpected": 1})',
        "write",
        "runs_create",
        "invalid_response",
        ("lacks the object run.info",),
        fault("json", json={"unexpected": 1}, path="/runs/create"),
    ),
    Case(
        "wrong_shape_field",
        "200 with a field of the wrong type (run.data.metrics is a number)",
        "write",
        "runs_get",
        "invalid_response",
        ("metrics",),
        fault("rewrite", path="/runs/get", edits=[{"at": "run.data.metrics", "set": 5}]),
    ),
    Case(
        "body_50mb",
        "a 50 MB body (chunked, no length)",
        "read",
        "registered_models_search",
        "invalid_response",
        ("exceeds the 4194304 byte cap",),
        fault("big", path="/registered-models/search"),
        memory="rss",
    ),
    Case(
        "body_50mb_declared",
        "a 50 MB body with Content-Length",
        "read",
        "registered_models_search",
        "invalid_response",
        ("52428800 bytes exceeds the 4194304 byte cap",),
        fault("big", chunked=False, path="/registered-models/search"),
        memory="rss",
    ),
    Case(
        "body_50mb_gzip",
        "a 50 MB body gzip-compressed to ~50 KB (a zip bomb)",
        "read",
        "registered_models_search",
        "invalid_response",
        ("byte cap",),
        fault("big", gzip=True, path="/registered-models/search"),
        memory="peak",
    ),
    Case(
        "redirect_loop",
        "a redirect loop (302 to itself)",
        "read",
        "health",
        "http_error",
        ("HTTP 302",),
        fault("redirect", path="/health"),
    ),
    Case(
        "tls_untrusted",
        "TLS server with an untrusted (self-signed) certificate",
        "read",
        "health",
        "tls_error",
        ("TLS error", "certificate verify failed"),
        lambda m: m.reload(m.tls_front.url),
        lambda m: m.reload(m.tls_front.url, ca_file=m.ca_file),
    ),
    Case(
        "read_back_mismatch",
        "read-back returns a different metric value",
        "write",
        "runs_get",
        "validation_failed",
        (f"read-back mismatch: metric {METRIC}",),
        fault("rewrite", path="/runs/get", edits=[{"at": f"run.data.metrics[key={METRIC}].value", "add": 1.5}]),
    ),
]


def fault_table() -> str:
    """The README table: every fault of the matrix, the step the test puts it at, the reason."""
    lines = ["| fault | step (in the test) | reason |", "|---|---|---|"]
    for case in CASES:
        probe = "mlflow_read" if case.probe == "read" else "mlflow_write"
        note = " (see note)" if case.bug else ""
        lines.append(f"| {case.fault} | `{probe}` / `{case.step}` | `{case.reason}`{note} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def matrix(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    workdir = tmp_path_factory.mktemp("fault-matrix")
    cert, key = make_self_signed(workdir / "tls")
    proxy = FaultProxy(mlflow_server.url).start()
    tls_front = FaultProxy(mlflow_server.url, tls=server_tls_context(cert, key)).start()
    config_path = workdir / "config.yaml"
    daemon: DaemonProcess | None = None
    try:
        m = Matrix(None, proxy, tls_front, cert, config_path)  # type: ignore[arg-type]
        m.write(proxy.url)
        daemon = DaemonProcess(config_path, workdir).start()
        m.daemon = daemon
        wait_for(lambda: httpx.get(f"{daemon.url}/readyz").status_code == 200, 20, "daemon ready")
        yield m
        assert daemon.stop() == 0
    finally:
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        proxy.stop()
        tls_front.stop()


def _params() -> list[Any]:
    out = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=f"bug: {case.bug}")] if case.bug else []
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


# --------------------------------------------------------------------------- the test


@pytest.mark.parametrize("case", _params())
def test_fault(matrix: Matrix, case: Case) -> None:
    m = matrix
    m.baseline()
    m.clean = False
    counter = dict(probe=case.probe, step=case.step, reason=case.reason)
    failures_before = sample(scrape(m.daemon.url), "synthetic_probe_step_failures_total", **counter) or 0
    pid = m.daemon.proc.pid
    if case.memory == "peak" and not reset_peak(pid):
        # The whole case, never half: growth over an old peak would measure nothing.
        m.clean = True
        pytest.skip("the memory peak (VmHWM) cannot be reset here (/proc/PID/clear_refs not writable)")
    memory_before = proc_status(pid)

    # The first run that STARTED after the fault is in place: a reload (a case that changes
    # the target's URL) takes a moment, and a run started during it still used the old URL.
    case.apply(m)
    set_at = time.time()
    try:
        runs = m.runs_after(case.probe, set_at, count=3 if case.memory else 1)
        first = runs[0]
        failed = next((s for s in first["steps"] if not s["ok"]), None)
        assert not first["ok"] and failed is not None, f"the first run after the fault passed: {first}"
        m.seen.add(failed["reason"])
        assert (failed["name"], failed["reason"]) == (case.step, case.reason), failed
        assert (first["reason"], first["error"]) == (case.reason, failed["error"])
        for text in case.text:
            assert text in failed["error"], (text, failed["error"])
        assert m.healthz() == 200
        status = m.status()
        assert any(f["name"] == case.probe and f["error"] == failed["error"] for f in status["recent_failures"])
        assert status["healthy"] is True
        families = scrape(m.daemon.url)
        assert (sample(families, "synthetic_probe_step_failures_total", **counter) or 0) > failures_before
        assert sample(families, "synthetic_probe_success", probe=case.probe) in (0.0, 1.0)
        if case.memory:
            assert all(not r["ok"] and r["reason"] == case.reason for r in runs), runs
            after = proc_status(pid)
            key = "VmHWM" if case.memory == "peak" else "VmRSS"
            growth = after[key] - memory_before[key]
            assert growth < 20 * MB, f"{key} grew {growth / MB:.1f} MB over three runs of the fault"
            if case.memory == "rss":
                assert m.proxy.stats["big_bytes_sent"] < 50 * MB, "the daemon must stop reading at the cap"
    finally:
        case.clear(m)
        cleared_at = time.time()
    after_clear = m.runs_after(case.probe, cleared_at)[0]
    assert after_clear["ok"], f"the first run after clearing the fault failed: {after_clear}"
    assert m.healthz() == 200
    m.clean = True


# Which README row ("### What each fault becomes") documents each case: a phrase of its
# fault cell. Rows may group cases (502/503/504); every case needs its row.
README_ROWS = {
    "connection_refused": "connection refused",
    "unresolvable_name": "does not resolve",
    "accept_never_answer": "request never answered",
    "body_trickles": "trickles slower",
    "closed_without_response": "connection closed with no response",
    "reset_mid_body": "TCP reset",
    "http_500": "HTTP 500",
    "http_502": "HTTP 502",
    "http_503": "HTTP 502 / 503",
    "http_504": "HTTP 502 / 503 / 504",
    "http_401": "HTTP 401",
    "http_403_invalid_host": "Invalid Host header",
    "http_403_permission_denied": "Permission denied",
    "html_200": "200 with an HTML page",
    "malformed_json_200": "malformed JSON",
    "wrong_shape_list": "wrong shape (a list",
    "wrong_shape_object": 'wrong shape (a list; `{"unexpected": 1}`)',
    "wrong_shape_field": "field of the wrong type",
    "body_50mb": "a 50 MB body, chunked",
    "body_50mb_declared": "a 50 MB body, chunked or with Content-Length",
    "body_50mb_gzip": "gzip-compressed",
    "redirect_loop": "redirect loop",
    "tls_untrusted": "untrusted (self-signed) certificate",
    "read_back_mismatch": "different metric value",
}
# README rows proven by a test elsewhere (not a proxy fault): phrase -> file and test name.
OTHER_ROWS = {
    "a real gunicorn `WORKER TIMEOUT`": (
        "test_alert_e2e.py",
        "test_gunicorn_worker_timeout_on_locked_database_pages_the_database_not_the_workers",
    ),
    "production stack:": ("test_prodstack_faults.py", "test_each_real_fault_names_its_broken_part_and_recovers"),
    "connection pool exhausted": (
        "test_diagnosis.py",
        "test_daemon_counts_a_pool_timeout_as_its_own_job_event_not_a_target_failure",
    ),
    "Asgard stand-in switches": ("test_asgard_probe.py", "test_each_switch_gives_its_reason_then_recovers"),
}
SCENARIO_NAMES = {"mlflow_read", "mlflow_write", "asgard_api"}


def readme_fault_rows() -> list[tuple[str, list[str], list[str]]]:
    """The README's fault table as (fault cell, step names, reason names), names from `backticks`."""
    text = (REPO / "docs" / "failures.md").read_text()  # the manual's page (README.md links to it)
    head = "## What each fault becomes"
    assert head in text, f"docs/failures.md lacks the section {head!r}"
    rows = []
    for line in re.split(r"\n##+ ", text.split(head, 1)[1], maxsplit=1)[0].splitlines():  # up to the next heading
        if not line.startswith("|") or line.startswith("|---") or line.startswith("| fault |"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, f"README fault row without 3 cells: {line}"
        rows.append((cells[0], re.findall(r"`([a-z_]+)`", cells[1]), re.findall(r"`([a-z_]+)`", cells[2])))
    assert rows, "README fault table is empty"
    return rows


def test_fault_table_covers_the_matrix() -> None:
    """Each case is in the README's table at its scenario, step and reason, and each row is tested."""
    assert len({c.id for c in CASES}) == len(CASES)
    assert set(README_ROWS) == {c.id for c in CASES}, "README_ROWS must name every case"
    rows = readme_fault_rows()
    used: set[int] = set()
    for case in CASES:
        matches = [i for i, (fault_cell, _, _) in enumerate(rows) if README_ROWS[case.id] in fault_cell]
        assert len(matches) == 1, f"{case.id}: {len(matches)} README rows contain {README_ROWS[case.id]!r}"
        fault_cell, names, reasons = rows[matches[0]]
        used.add(matches[0])
        scenario = "mlflow_read" if case.probe == "read" else "mlflow_write"
        named = [n for n in names if n in SCENARIO_NAMES]
        assert not named or scenario in named, (
            f"{case.id}: README row {fault_cell!r} names {named}, test runs {scenario}"
        )
        assert case.step in names, f"{case.id}: README row {fault_cell!r} gives steps {names}, test: {case.step}"
        assert case.reason in reasons, f"{case.id}: README row {fault_cell!r} gives {reasons}, test: {case.reason}"
    for i, (fault_cell, _, _) in enumerate(rows):
        if i in used:
            continue
        other = [v for k, v in OTHER_ROWS.items() if k in fault_cell]
        assert other, f"README row {fault_cell!r} is backed by no fault case and no other test"
        ((file, test),) = other
        assert f"def {test}(" in (REPO / "tests" / file).read_text(), (
            f"README row {fault_cell!r}: {file}::{test} is gone"
        )


def test_daemon_log_has_one_line_per_failed_run(matrix: Matrix) -> None:
    """Every failed run of the matrix is in the JSON log with its step, reason and error."""
    import json

    lines = [json.loads(x) for x in matrix.daemon.log_text().splitlines() if x.startswith("{")]
    failed = [x for x in lines if x.get("event") in ("probe_run", "probe_internal_error") and not x.get("ok")]
    if not matrix.seen:
        pytest.skip("no fault case ran")
    assert failed
    assert all({"step", "reason", "error"} <= set(x) for x in failed)
    assert matrix.seen <= {x["reason"] for x in failed}


if __name__ == "__main__":
    print(fault_table())
