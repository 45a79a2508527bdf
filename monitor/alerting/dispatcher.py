"""Delivery off the probe path: a bounded queue and one worker per receiver.

`submit` is synchronous and O(1): it only appends to each receiver's queue, so a
receiver that hangs or refuses connections can never delay or break a probe run. When
a queue is full the oldest batch is dropped (counted as result="dropped"): newer
notifications describe the current state better, and a firing alert is re-sent
anyway. A failed batch is retried with exponential backoff, then given up (counted
as result="failure"); the engine's periodic re-send covers a lost firing notice.
Queues are per receiver so a slow receiver does not hold back a healthy one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from monitor.alerting.alerts import Alert
from monitor.alerting.notifiers import Notifier, make_notifier
from monitor.config import ReceiverConfig

RESULTS = ("success", "failure", "retry", "dropped")

Count = Callable[[str, str], None]


@dataclass(eq=False)
class _Lane:
    notifier: Notifier
    queue: asyncio.Queue[list[Alert]]
    task: asyncio.Task[None] | None = None
    busy: bool = False


class Dispatcher:
    def __init__(
        self,
        receivers: Iterable[ReceiverConfig],
        count: Count,
        *,
        queue_size: int = 1000,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        attempts: int = 5,
        logger: Any = None,
        notifiers: Iterable[Notifier] | None = None,
    ) -> None:
        self._count = count
        self._queue_size = queue_size
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._attempts = attempts
        self._log = logger
        built = list(notifiers) if notifiers is not None else [make_notifier(r) for r in receivers]
        self._lanes = [_Lane(n, asyncio.Queue()) for n in built]
        self._closed = False

    @property
    def receivers(self) -> list[str]:
        return [lane.notifier.name for lane in self._lanes]

    def start(self) -> None:
        """Start one worker task per receiver (needs a running loop)."""
        for lane in self._lanes:
            if lane.task is None:
                lane.task = asyncio.get_running_loop().create_task(
                    self._work(lane), name=f"alert-receiver-{lane.notifier.name}"
                )

    def submit(self, alerts: list[Alert]) -> None:
        """Queue one batch for every receiver; never blocks, never raises."""
        if not alerts or self._closed:
            return
        for lane in self._lanes:
            if lane.queue.qsize() >= self._queue_size:
                try:
                    lane.queue.get_nowait()
                    lane.queue.task_done()
                    self._count(lane.notifier.name, "dropped")
                except asyncio.QueueEmpty:
                    pass
            lane.queue.put_nowait(list(alerts))

    def pending(self) -> int:
        return sum(lane.queue.qsize() + (1 if lane.busy else 0) for lane in self._lanes)

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued batch is delivered or given up; False on timeout."""
        waits = [asyncio.ensure_future(lane.queue.join()) for lane in self._lanes if lane.task is not None]
        if not waits:
            return True
        done, not_done = await asyncio.wait(waits, timeout=max(0.0, timeout))
        for task in not_done:
            task.cancel()
        return not not_done

    async def close(self, flush_timeout: float = 5.0) -> None:
        """Flush, then stop the workers and close the HTTP clients; what is left is dropped."""
        if self._closed:
            return
        await self.flush(flush_timeout)
        self._closed = True
        left = {id(lane): lane.queue.qsize() + (1 if lane.busy else 0) for lane in self._lanes}
        for lane in self._lanes:
            if lane.task is not None:
                lane.task.cancel()
        for lane in self._lanes:
            if lane.task is not None:
                await asyncio.wait([lane.task])  # cancelled (or crashed): done either way
            dropped = left[id(lane)]
            for _ in range(dropped):
                self._count(lane.notifier.name, "dropped")
            if dropped and self._log is not None:
                self._log.warning("alert_notifications_dropped", receiver=lane.notifier.name, batches=dropped,
                                  why="not delivered before shutdown")
            await lane.notifier.aclose()

    async def _work(self, lane: _Lane) -> None:
        while True:
            batch = await lane.queue.get()
            lane.busy = True
            try:
                await self._deliver(lane.notifier, batch)
            finally:
                lane.busy = False
                lane.queue.task_done()

    async def _deliver(self, notifier: Notifier, batch: list[Alert]) -> None:
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            started = time.monotonic()
            try:
                await notifier.send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure is retried the same way
                error = _describe(exc)
                if attempt >= self._attempts:
                    self._count(notifier.name, "failure")
                    if self._log is not None:
                        self._log.error(
                            "alert_notification_failed", receiver=notifier.name, url=notifier.safe_url,
                            attempts=attempt, alerts=len(batch), error=error,
                        )
                    return
                self._count(notifier.name, "retry")
                if self._log is not None:
                    self._log.warning(
                        "alert_notification_retry", receiver=notifier.name, url=notifier.safe_url,
                        attempt=attempt, retry_in=delay, error=error,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            self._count(notifier.name, "success")
            if self._log is not None:
                self._log.debug(
                    "alert_notification_sent", receiver=notifier.name, alerts=len(batch), attempt=attempt,
                    seconds=round(time.monotonic() - started, 4),
                )
            return


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {' '.join(text.split())[:300]}"
