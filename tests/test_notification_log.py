"""Notification retries are logged once per batch with their count (issue 23), not once per
attempt: an unreachable receiver no longer writes five lines per batch at every re-send."""

from __future__ import annotations

from typing import Any

from monitor.alerting.dispatcher import Dispatcher
from tests.test_notifiers import alert, receiver, recorder


class Lines:
    """Collects what the dispatcher logs, as structlog's bound logger is called."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append((level, event, fields))

    def at(self, *levels: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [line for line in self.lines if line[0] in levels]


async def _deliver(statuses: list[int], attempts: int) -> tuple[Lines, int]:
    log = Lines()
    async with recorder(statuses=statuses) as server:
        dispatcher = Dispatcher(
            [receiver("webhook", server.url, name="hook")],
            lambda r, res: None,
            backoff=0.01,
            backoff_max=0.02,
            attempts=attempts,
            logger=log,
        )
        dispatcher.start()
        dispatcher.submit([alert()])
        assert await dispatcher.flush(5)
        await dispatcher.close()
        return log, len(server.requests)


async def test_retries_then_success_is_one_line_with_the_count() -> None:
    log, requests = await _deliver([500, 503, 500], attempts=5)
    assert requests == 4
    ((level, event, fields),) = log.at("warning", "error", "info")
    assert (level, event) == ("warning", "alert_notification_retried")
    assert fields["retries"] == 3 and fields["receiver"] == "hook" and fields["alerts"] == 1
    assert "HTTP 500" in fields["last_error"] or "500" in fields["last_error"]


async def test_giving_up_is_one_line_with_the_attempts() -> None:
    log, requests = await _deliver([500] * 10, attempts=4)
    assert requests == 4
    ((level, event, fields),) = log.at("warning", "error", "info")
    assert (level, event, fields["attempts"]) == ("error", "alert_notification_failed", 4)


async def test_first_try_success_logs_nothing_above_debug() -> None:
    log, requests = await _deliver([], attempts=5)
    assert requests == 1 and log.at("warning", "error", "info") == []
