"""Benchmarks that cannot rot (issue 24): every benchmark under tests/perf/ runs in its
`--smoke` mode (tiny sizes, seconds to a minute) as a subprocess, exactly as documented.
A benchmark whose config no longer validates, or that no longer starts or finishes, fails
here. The figures it prints are not checked: they stay out of pass/fail.

Marked `perf` (slow): in the full suite, deselected with `-m 'not perf'`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PERF = REPO / "tests" / "perf"

# module -> (a line its output must hold, what it needs installed)
BENCHMARKS: dict[str, tuple[str, str | None]] = {
    "bench": ("| # | measure |", "prometheus-blackbox-exporter"),
    "wide_outage": ("| hanging", None),
    "soak": ("runs (", None),
    "alert_burst": ("| setup | total s |", None),
    "time_to_alert": ("| fault | config |", None),
    "auth_flood": ("| window | runs |", None),
    "profile_run": ("| stage | share", None),
    "checks_cpu": ("| ratio (goal", None),
    "checks_libs": ("## JSONPath", None),
    "status_page": ("| what | figure | goal |", None),
    "metrics_parts": ("| render at", None),
}


def test_every_benchmark_has_a_smoke_run() -> None:
    modules = {p.stem for p in PERF.glob("*.py") if not p.stem.startswith("_")}
    assert modules == set(BENCHMARKS), f"add a --smoke entry for: {sorted(modules - set(BENCHMARKS))}"
    for module in modules:
        assert "--smoke" in (PERF / f"{module}.py").read_text(), f"tests/perf/{module}.py has no --smoke mode"


@pytest.mark.perf
@pytest.mark.timeout(400)
@pytest.mark.parametrize("module", sorted(BENCHMARKS))
def test_benchmark_smoke_run(module: str) -> None:
    marker, needs = BENCHMARKS[module]
    if needs is not None and shutil.which(needs) is None:
        pytest.skip(f"{needs} is not installed (Debian package {needs}); tests/run.sh installs it")
    done = subprocess.run(
        [sys.executable, "-m", f"tests.perf.{module}", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert done.returncode == 0, (
        f"exit {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )
    assert marker in done.stdout, done.stdout[-3000:]
