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
# --cluster.peer-timeout: the second member waits this long after each flush before it
# checks the gossiped notification log, and then decides on the alerts as they were at
# the flush. Keep it below group_interval (minus the gossip delay): otherwise an alert
# resolved inside that wait is sent again as firing by the second member (issue 26;
# measured in tests/test_fleet_am_pair.py). Nor too short: the first member's record
# must reach the second within it, or both send (1s was missed on a loaded 2-core machine).
# 2s over loopback allows group_interval down to 6s; in Kubernetes keep 15s with
# group_interval >= 1m.
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
  --cluster.settle-timeout=5s --cluster.peer-timeout=2s &
pids+=($!)
"$am" --config.file="$here/alertmanager.yml" --storage.path="$state/b" \
  --web.listen-address=127.0.0.1:9094 \
  --cluster.listen-address=127.0.0.1:9194 --cluster.peer=127.0.0.1:9193 \
  --cluster.settle-timeout=5s --cluster.peer-timeout=2s &
pids+=($!)
wait
