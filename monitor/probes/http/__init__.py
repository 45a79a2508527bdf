"""The `http` plug-in: checks written in the configuration (steps, JSONPath extraction, CEL assertions).

`kind.py` declares the kind and its scenario; `options.py` the config contract (compiled at
load); `expressions.py` the CEL and JSONPath wrappers and their bounds; `scenario.py` the run.
"""

from monitor.probes.http.kind import KINDS, SCENARIOS

__all__ = ["KINDS", "SCENARIOS"]
