#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, then runs pytest.
#   ./tests/run.sh              everything
#   ./tests/run.sh -k alert     extra arguments go to pytest
#   TEST_WORKERS=0 ./tests/run.sh   in one process (default: 4 pytest-xdist workers, then
#                               the tests marked serial alone; do not pass -m to the full run)
#   ./tests/run.sh --fast       the fast lane: unit and in-process tests, no external server or
#                               process (markers integration, slow, perf left out); no apt-get
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/local/venv.sh

if [ "${1:-}" = "--fast" ]; then
  shift
  ensure_venv test
  # A fast-lane test that starts a process fails and says to mark it (tests/conftest.py).
  export SYNTHETIC_MONITOR_FAST_LANE=1
  exec "$VENV_PY" -m pytest -m "not integration and not slow and not perf" "$@"
fi

# Real Prometheus, Alertmanager and blackbox_exporter binaries for the rule and alert tests,
# and PostgreSQL for the production-stack tests.
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v prometheus-blackbox-exporter >/dev/null || need+=(prometheus-blackbox-exporter)
# PostgreSQL 15 for the production-stack fixture (tests/prodstack.py runs its own cluster).
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
# Headless Chromium for the status page test (tests/test_status_page_browser.py).
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${need[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "note: missing ${need[*]} (not root): the tests that need them will be skipped with a reason" >&2
  fi
fi

ensure_venv test
# Lint, format and types first (a few seconds): the same checks for every change.
bin="$(dirname "$VENV_PY")"
echo "ruff check, ruff format --check, mypy --strict monitor/ ..." >&2
"$bin/ruff" check --quiet monitor tests deploy
"$bin/ruff" format --check --quiet monitor tests deploy
"$bin/mypy" --no-error-summary
# In worker processes (pytest-xdist): most tests wait on servers, not on the CPU. A module
# keeps to one worker (--dist loadfile; tests/conftest.py hands the long ones out first). Then the tests marked `serial` (the
# production stack's fault tests, which read timings) alone. TEST_WORKERS=0: one process.
workers="${TEST_WORKERS:-4}"
if [ "$workers" = 0 ]; then
  exec "$VENV_PY" -m pytest -p no:xdist "$@"
fi
parallel=0
"$VENV_PY" -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder -m "not serial" "$@" || parallel=$?
echo "the tests marked serial, alone:" >&2
alone=0
"$VENV_PY" -m pytest -p no:xdist -m serial "$@" || alone=$?
# 5: "no tests collected" (extra arguments selected none of one part): not a failure.
[ "$parallel" = 5 ] && parallel=0
[ "$alone" = 5 ] && alone=0
[ "$parallel" != 0 ] && exit "$parallel"
exit "$alone"
