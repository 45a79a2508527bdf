"""CPU per step of a config-defined check against a built-in scenario, at the same rate.

    python -m tests.perf.checks_cpu [--rate RUNS_PER_S] [--seconds S] [--pairs N]

One target process (stdlib HTTP server, its own CPU not counted) answers the five
requests of the built-in `mlflow_read` scenario. In this process, paced at the same rate,
the built-in scenario and an `http` check with the same five requests run alternately
in pairs; each side's CPU (process_time) over its window is divided by its steps. The
check carries what a written check usually has: one CEL assertion per step (three of them
on the JSON body) and one JSONPath extraction. Goal: at most 1.5 times the built-in's
CPU per step. Prints one Markdown table (figures go to the performance docs).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

from monitor.http.client import TargetClient
from monitor.probes.http.options import HttpCheckOptions
from monitor.scenario.registry import SCENARIOS
from monitor.scenario.runner import run_probe

SERVER = r"""
import http.server, json, sys
EXPERIMENTS = {"experiments": [{"experiment_id": str(i), "name": f"e{i}"} for i in range(3)]}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def _send(self, body, ctype="application/json"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/health":
            return self._send(b"OK", "text/plain")
        if self.path == "/version":
            return self._send(b"3.17.2", "text/plain")
        return self._send(b'{"registered_models": []}')
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "experiments" in self.path:
            return self._send(json.dumps(EXPERIMENTS).encode())
        return self._send(b'{"runs": []}')
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

API = "/api/2.0/mlflow"
CHECK: dict[str, Any] = {
    "steps": [
        {"name": "health", "request": {"path": "/health"}, "assert": [{"name": "ok", "cel": "text == 'OK'"}]},
        {
            "name": "experiments_search",
            "request": {"method": "POST", "path": f"{API}/experiments/search", "json": {"max_results": 10}},
            "assert": [{"name": "has_experiments", "cel": "size(body.experiments) > 0"}],
            "extract": {"experiment": "$.experiments[0].experiment_id"},
        },
        {
            "name": "registered_models_search",
            "request": {"path": f"{API}/registered-models/search", "query": {"max_results": "10"}},
            "assert": [{"name": "a_list", "cel": "size(body.registered_models) >= 0"}],
        },
        {
            "name": "runs_search",
            "request": {
                "method": "POST",
                "path": f"{API}/runs/search",
                "json": {"experiment_ids": ["${experiment}"], "max_results": 10},
            },
            "assert": [{"name": "runs_listed", "cel": "has(body.runs)"}],
        },
        {"name": "version", "request": {"path": "/version"}, "assert": [{"name": "fast", "cel": "duration_ms < 1000"}]},
    ]
}


async def window(scenario: str, options: Any, url: str, rate: float, seconds: float) -> tuple[float, int]:
    """(CPU seconds, steps) of running `scenario` `rate` times a second for `seconds`."""
    client = TargetClient(url)
    try:
        await run_probe(SCENARIOS[scenario], client, options, probe="warm", target="t", timeout=5)  # warm-up
        start_cpu, start = time.process_time(), time.monotonic()
        steps, k = 0, 0
        while (now := time.monotonic()) - start < seconds:
            due = start + k / rate
            if due > now:
                await asyncio.sleep(due - now)
            result = await run_probe(SCENARIOS[scenario], client, options, probe="p", target="t", timeout=5)
            assert result.ok, result.as_dict()
            steps += len(result.steps)
            k += 1
        return time.process_time() - start_cpu, steps
    finally:
        await client.aclose()


async def main_async(rate: float, seconds: float, pairs: int) -> None:
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        builtin_options = SCENARIOS["mlflow_read"].options_model()
        check_options = HttpCheckOptions.model_validate(CHECK)
        ratios, builtin_ms, check_ms = [], [], []
        for _ in range(pairs):
            cpu_b, steps_b = await window("mlflow_read", builtin_options, url, rate, seconds)
            cpu_c, steps_c = await window("http", check_options, url, rate, seconds)
            b, c = cpu_b / steps_b * 1e3, cpu_c / steps_c * 1e3
            builtin_ms.append(b)
            check_ms.append(c)
            ratios.append(c / b)
        print(f"{pairs} pairs of {seconds:g} s windows at {rate:g} runs/s (5 steps a run)\n")
        print("| side | CPU per step (ms, median) | min-max |")
        print("|---|---|---|")
        print(
            f"| built-in mlflow_read | {statistics.median(builtin_ms):.3f} | {min(builtin_ms):.3f}-{max(builtin_ms):.3f} |"
        )
        print(
            f"| config-defined http check | {statistics.median(check_ms):.3f} | {min(check_ms):.3f}-{max(check_ms):.3f} |"
        )
        print(f"| ratio (goal <= 1.5) | {statistics.median(ratios):.2f} | {min(ratios):.2f}-{max(ratios):.2f} |")
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="runs per second on each side")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="one short pair at a low rate: does it still run?")
    args = parser.parse_args()
    if args.smoke:
        args.rate, args.seconds, args.pairs = 5.0, 2.0, 1
    asyncio.run(main_async(args.rate, args.seconds, args.pairs))


if __name__ == "__main__":
    main()
