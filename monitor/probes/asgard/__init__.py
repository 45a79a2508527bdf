"""The Asgard plug-in: the MLOps API's status, model list and one model, cross-checked against MLflow."""

from monitor.probes.asgard.kind import KINDS, SCENARIOS

__all__ = ["KINDS", "SCENARIOS"]
