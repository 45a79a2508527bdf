#!/usr/bin/env bash
# The local demo from a fresh clone: installs the project (with MLflow) into ./.venv,
# then starts MLflow, the Asgard stand-in and the monitor on 127.0.0.1. Ctrl-C stops all.
#   ./deploy/local/demo.sh [--no-prometheus] [--monitor-port 9356] ...
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/local/venv.sh
ensure_venv demo
exec "$VENV_PY" -m monitor demo "$@"
