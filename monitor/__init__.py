"""Synthetic monitor: scheduled probe scenarios against HTTP services (the plug-ins in monitor/probes/)."""

__version__ = "0.1.0"
