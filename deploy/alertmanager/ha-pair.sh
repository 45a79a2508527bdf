#!/usr/bin/env bash
# Two Alertmanagers as one HA cluster on this machine (gossip over loopback), the
# shape of a production pair (kube-prometheus-stack runs it as a StatefulSet with
# the same flags). Each daemon of a fleet, like Prometheus, sends every alert to
# EVERY Alertmanager (daemon-receivers.yaml); the pair gossips notification logs
# and silences, so one notification goes out, not one per replica or per peer.
#
#   deploy/alertmanager/ha-pair.sh [STATE_DIR]    # Ctrl-C stops both
#
# Ports: web 9093 and 9094, cluster gossip 9193 and 9194 (127.0.0.1 only).
# --cluster.peer names the other member; --cluster.settle-timeout short for a demo.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${1:-${TMPDIR:-/tmp}/synthetic-monitor-am}"
am="$(command -v alertmanager || command -v prometheus-alertmanager)"
mkdir -p "$state/a" "$state/b"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
"$am" --config.file="$here/alertmanager.yml" --storage.path="$state/a" \
  --web.listen-address=127.0.0.1:9093 \
  --cluster.listen-address=127.0.0.1:9193 --cluster.peer=127.0.0.1:9194 \
  --cluster.settle-timeout=5s &
pids+=($!)
"$am" --config.file="$here/alertmanager.yml" --storage.path="$state/b" \
  --web.listen-address=127.0.0.1:9094 \
  --cluster.listen-address=127.0.0.1:9194 --cluster.peer=127.0.0.1:9193 \
  --cluster.settle-timeout=5s &
pids+=($!)
wait
