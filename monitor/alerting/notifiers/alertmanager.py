"""Alertmanager API v2: POST {url}/api/v2/alerts with a list of postable alerts.

Alertmanager does the grouping, routing, inhibition and de-duplication itself; the
daemon re-sends firing alerts every resend_interval with endsAt ahead of time, so they
stay active while the daemon runs and expire by themselves if it dies.
"""

from __future__ import annotations

from monitor.alerting.alerts import Alert
from monitor.alerting.notifiers.base import Notifier


class AlertmanagerNotifier(Notifier):
    kind = "alertmanager"

    async def send(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        await self._post(f"{self.config.url}/api/v2/alerts", [alert.as_alertmanager() for alert in alerts])
