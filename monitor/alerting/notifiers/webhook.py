"""A generic webhook receiving the Alertmanager webhook JSON (version "4").

Same payload Alertmanager's own webhook_configs send, so an existing consumer (chat
bridges, ticketing hooks, the demo receiver) works with the daemon pushing directly.
One batch is one group: firing and resolved notices are posted as separate messages
so `status` is exact for each.
"""

from __future__ import annotations

from typing import Any

from monitor.alerting.alerts import Alert
from monitor.alerting.notifiers.base import Notifier

GROUP_BY = ("alertname", "target", "probe")


class WebhookNotifier(Notifier):
    kind = "webhook"

    async def send(self, alerts: list[Alert]) -> None:
        if not self.config.send_resolved:
            alerts = [a for a in alerts if not a.resolved]
        for group in (
            [a for a in alerts if not a.resolved],
            [a for a in alerts if a.resolved],
        ):
            if group:
                await self._post(self.config.url, self.payload(group))

    def payload(self, alerts: list[Alert]) -> dict[str, Any]:
        common_labels = _common([a.labels for a in alerts])
        group_labels = {k: common_labels[k] for k in GROUP_BY if k in common_labels}
        group_key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}"
        generator = next((a.generator_url for a in alerts if a.generator_url), "")
        return {
            "version": "4",
            "groupKey": group_key,
            "truncatedAlerts": 0,
            "status": "firing" if any(not a.resolved for a in alerts) else "resolved",
            "receiver": self.name,
            "groupLabels": group_labels,
            "commonLabels": common_labels,
            "commonAnnotations": _common([a.annotations for a in alerts]),
            "externalURL": generator,
            "alerts": [a.as_webhook() for a in alerts],
        }


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in sorted(first.items()) if all(m.get(k) == v for m in maps[1:])}
