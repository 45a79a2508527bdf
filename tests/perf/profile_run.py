"""Profile: where the CPU of one probe run goes, stage by stage (issue 24).

    .venv/bin/python -m tests.perf.profile_run                   # 60 s at 300 steps/s
    .venv/bin/python -m tests.perf.profile_run --seconds 120 --out run.prof
    .venv/bin/python -m tests.perf.profile_run --daemon-repo /work/wt/perf-base   # the code before

The daemon runs under the stdlib's cProfile (tests/perf/_profiled_daemon.py: the event loop
thread's CPU clock, switched on by SIGUSR1 once the daemon is ready, so start-up is left out)
with 100 probes of `mlflow_read` (three HTTP steps each) every second against the bench's
raw asyncio target on 127.0.0.1: 300 steps/s, as bench.py's CPU pairs. /metrics is scraped
every 15 s like Prometheus would. After `--seconds`, SIGTERM stops it cleanly and the
profile is written. Every function's own time (tottime) is then assigned to a stage by the
file it lives in, and the table gives each stage's share of the profiled CPU and its cost
per run and per step. cProfile adds its own overhead per call, so read shares, not
absolute figures (bench.py measures those, unprofiled).
"""

from __future__ import annotations

import argparse
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.perf import bench
from tests.perf.bench import LOCAL, Proc, Target, free_port, http_get, log, stop_all, total

# First match wins: (stage, substrings of the file path).
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("scheduler", ("monitor/scheduler.py", "apscheduler/")),
    ("transport", ("monitor/http/transport.py", "httptools", "httpx/")),
    ("classification", ("monitor/http/client.py",)),
    ("diagnosis", ("monitor/diagnosis.py", "monitor/probes/mlflow/explain.py")),
    ("runner", ("monitor/jobs.py", "monitor/scenario/", "monitor/probes/", "monitor/results.py")),
    ("pipeline", ("monitor/pipeline.py", "monitor/logsetup.py", "monitor/events.py")),
    ("rendering", ("monitor/sinks/exposition.py", "prometheus_client/exposition.py", "monitor/web/")),
    ("sinks", ("monitor/sinks/", "monitor/alerting/", "prometheus_client/", "structlog/")),
    ("event loop and I/O", ("asyncio/", "selectors.py", "socket.py", "ssl.py")),
    ("json", ("json/",)),
]


def stage_of(filename: str) -> str:
    for stage, parts in STAGES:
        if any(part in filename for part in parts):
            return stage
    if filename.startswith("~") or filename == "":
        return "builtins (C calls)"
    return "other"


def breakdown(profile: Path) -> dict[str, float]:
    stats = pstats.Stats(str(profile))
    out: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, callers) in raw.items():
        stage = stage_of(filename)
        if stage == "builtins (C calls)":
            # A C function's time goes to the stage of whoever called it most.
            caller = max(callers.items(), key=lambda kv: kv[1][2], default=None) if callers else None
            stage = stage_of(caller[0][0]) if caller else stage
            if stage == "builtins (C calls)":
                stage = "other"
        out[stage] = out.get(stage, 0.0) + tottime
    return out


def top(profile: Path, n: int = 25) -> list[tuple[str, float, int]]:
    stats = pstats.Stats(str(profile))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = [(f"{Path(f).name}:{line} {name}", tt, nc) for (f, line, name), (_cc, nc, tt, _ct, _c) in raw.items()]
    return sorted(rows, key=lambda r: -r[1])[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.profile_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--out", help="keep the profile here (pstats format; snakeviz, pstats)")
    parser.add_argument("--daemon-repo", help="profile the daemon of this checkout instead")
    parser.add_argument("--smoke", action="store_true", help="10 probes for 3 s: does it still run?")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seconds, args.probes = 3.0, 10
    if args.daemon_repo:
        bench.DAEMON_REPO = Path(args.daemon_repo).resolve()
    workdir = Path(tempfile.mkdtemp(prefix="synthetic-profile-"))
    profile = Path(args.out).resolve() if args.out else workdir / "run.prof"
    try:
        target = Target(workdir, {"fast": 0.0})
        per_target = 10
        config = workdir / "daemon.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "log": {"level": "info", "format": "json"},
                    "targets": [
                        {"name": f"t{i}", "kind": "mlflow", "url": target.url("fast")}
                        for i in range(-(-args.probes // per_target))
                    ],
                    "probes": [
                        {"name": f"p{i}", "target": f"t{i // per_target}", "scenario": "mlflow_read", "interval": 1.0}
                        for i in range(args.probes)
                    ],
                }
            )
        )
        port = free_port()
        wrapper = str(Path(__file__).with_name("_profiled_daemon.py"))
        argv_daemon = [sys.executable, wrapper, str(profile), "run"]
        argv_daemon += ["--config", str(config), "--listen", f"{LOCAL}:{port}"]
        proc = Proc("daemon", argv_daemon, workdir, cwd=bench.DAEMON_REPO, pythonpath=bench.DAEMON_REPO)
        bench.wait_until(lambda: http_get(port, "/readyz", 5)[0] == 200, 90, "daemon /readyz", proc)
        steps0 = total(http_get(port, "/metrics")[1].decode(), "synthetic_probe_step_duration_seconds_count")
        runs0 = total(http_get(port, "/metrics")[1].decode(), "synthetic_probe_runs_total")
        time.sleep(min(5.0, args.seconds))  # past the first, spread runs and connection set-up
        proc.proc.send_signal(signal.SIGUSR1)  # the profiler starts now
        log(f"profiling {args.seconds:g} s")
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            time.sleep(min(15.0, max(0.0, end - time.monotonic())))
            text = http_get(port, "/metrics")[1].decode()  # a scrape, as Prometheus every 15 s
        steps = total(text, "synthetic_probe_step_duration_seconds_count") - steps0
        runs = total(text, "synthetic_probe_runs_total") - runs0
        proc.proc.send_signal(signal.SIGTERM)
        proc.proc.wait(timeout=60)
        stages = breakdown(profile)
        rows = top(profile)
    finally:
        stop_all()
        if not args.out:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    everything = sum(stages.values())
    command = "python -m tests.perf.profile_run" + (" --smoke" if args.smoke else f" --seconds {args.seconds:g}")
    print(f"`{command}`: {args.probes} probes x 3 steps every 1 s; {runs:.0f} runs, {steps:.0f} steps profiled\n")
    print("| stage | share of profiled CPU | µs per run (profiled) | µs per step (profiled) |")
    print("|---|---|---|---|")
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(
            f"| {stage} | {seconds / everything * 100:.1f} % | {seconds / max(runs, 1) * 1e6:.0f} | "
            f"{seconds / max(steps, 1) * 1e6:.0f} |"
        )
    print("\nTop functions by own time:\n")
    print("| function | own s | calls |")
    print("|---|---|---|")
    for name, seconds, calls in rows:
        print(f"| {name} | {seconds:.2f} | {calls} |")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
