"""A daemon's place in a fleet: its location, replica name and shard, as others see it.

Pure helpers the daemon and `check` share. The location goes on every pushed alert as a
label while the replica name never does: replicas watching the same probe from the same
location must push identical label sets so an Alertmanager cluster deduplicates them.
"""

from __future__ import annotations

import socket
from typing import Any

from monitor.config import AlertingConfig, Config


def replica_name(config: Config) -> str:
    """The configured or injected replica (pod) name, else this host's name."""
    return config.replica or socket.gethostname()


def identity(config: Config) -> dict[str, Any]:
    """`location` and `replica` for /status, `check` and the start-up log."""
    return {"location": config.location, "replica": replica_name(config)}


def run_member(config: Config) -> str:
    """The tag value that marks what this daemon's own probes write in a fleet ('' alone).

    Two members running the same write probe each tag and clean up only their own runs,
    so one member's start-up janitor never deletes a run another member is writing.
    """
    return replica_name(config) if config.fleet else ""


def alerting_for(config: Config) -> AlertingConfig:
    """The alerting config with `location` as an extra alert label, when one is set."""
    if config.location is None:
        return config.alerting
    return config.alerting.model_copy(update={"labels": {**config.alerting.labels, "location": config.location}})


def fleet_status(config: Config) -> dict[str, Any]:
    """Which shard member runs which probe (every member computes the same table)."""
    data: dict[str, Any] = {
        "peers": None
        if config.peers is None
        else {
            "urls": list(config.peers.urls),
            "service": config.peers.service,
            "min_locations": config.peers.min_locations,
        },
        "shard": None,
    }
    if config.shard is not None:
        data["shard"] = {
            "index": config.shard.index,
            "count": config.shard.count,
            "replicas_per_probe": config.shard.replicas_per_probe,
            "probes": [p.name for p in config.own_probes()],
            "assignment": config.assignment(),
        }
    return data


def fleet_webhook_warning(config: Config) -> str | None:
    """Why direct webhooks and a fleet do not mix, or None when they are not both set."""
    webhooks = [r.label for r in config.alerting.receivers if r.kind == "webhook"]
    if not config.fleet or not webhooks or not config.alerting.enabled:
        return None
    return (
        f"webhook receiver(s) {', '.join(webhooks)} in fleet mode (shard/peers): every replica sends its own copy;"
        " route webhooks through Alertmanager, which deduplicates the replicas"
    )


def warn_fleet_webhooks(config: Config, log: Any) -> None:
    message = fleet_webhook_warning(config)
    if message is not None:
        log.warning("fleet_webhook_duplicates", message=message)
