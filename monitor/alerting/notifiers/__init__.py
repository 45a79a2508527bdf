"""Receiver kinds, one file each; `make_notifier` picks by ReceiverConfig.kind."""

from __future__ import annotations

from monitor.alerting.notifiers.alertmanager import AlertmanagerNotifier
from monitor.alerting.notifiers.base import Notifier, NotifyError
from monitor.alerting.notifiers.webhook import WebhookNotifier
from monitor.config import ReceiverConfig

KINDS: dict[str, type[Notifier]] = {
    AlertmanagerNotifier.kind: AlertmanagerNotifier,
    WebhookNotifier.kind: WebhookNotifier,
}


def make_notifier(config: ReceiverConfig) -> Notifier:
    return KINDS[config.kind](config)


__all__ = ["AlertmanagerNotifier", "Notifier", "NotifyError", "WebhookNotifier", "make_notifier"]
