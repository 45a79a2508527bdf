"""The MLflow plug-in: a tracking server's read, write and registry paths, and their explanations.

`kind.py` declares the kind and its scenarios; `api.py` holds what they share.
"""

from monitor.probes.mlflow.kind import KINDS, SCENARIOS

__all__ = ["KINDS", "SCENARIOS"]
