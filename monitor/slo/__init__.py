"""Service level objectives: config models, the Prometheus rule generator and the report.

Kept apart from the daemon: `synthetic-monitor slo rules` and `slo report` read the same
config as `run`, but nothing here runs inside the daemon.
"""
