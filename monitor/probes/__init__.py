"""The plug-ins: one package (or module) per kind of monitored service, each exposing `KINDS`
and `SCENARIOS`. Adding one is its folder plus its name on the two registry lines below;
monitor/scenario/registry.py builds the lookup tables and nothing else names a plug-in.
"""

from __future__ import annotations

from monitor.probes import asgard, http, mlflow

PLUGINS = (mlflow, asgard, http)
