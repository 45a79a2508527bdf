"""Delivery off the probe path: a bounded queue and one worker per receiver.

`submit` is synchronous and O(receivers): it only appends to each receiver's queue, so a
receiver that hangs or refuses connections can never delay or break a probe run. When
a queue is full the oldest batch is dropped (counted as result="dropped"): newer
notifications describe the current state better, and a firing alert is re-sent
anyway. A failed batch is retried with exponential backoff, then given up (counted
as result="failure"). Every outcome is reported to `outcome(receiver, alerts, ok)`, so
the engine can keep a resolved notice that did not get through and retry it later.
Queues are per receiver so a slow receiver does not hold back a healthy one.

Batching: a worker sends at most one request per `batch_wait` (retries aside). An
alert after a quiet spell goes out at once; what arrives while a request is in flight
or within `batch_wait` of the last one is sent together as the next request (one
notice per alert, the newest): in a wide outage a receiver gets a few requests, not
one per alert, and a lone alert is not delayed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from monitor.alerting.alerts import Alert
from monitor.alerting.notifiers import Notifier, make_notifier
from monitor.config import ReceiverConfig

RESULTS = ("success", "failure", "retry", "dropped")

Count = Callable[[str, str], None]
# (receiver, alerts, delivered): called once per batch given up, dropped or delivered.
Outcome = Callable[[str, list[Alert], bool], None]


@dataclass(eq=False)
class _Lane:
    notifier: Notifier
    queue: asyncio.Queue[list[Alert]]
    task: asyncio.Task[None] | None = None
    busy: bool = False
    inflight: list[Alert] | None = None
    last_send: float = float("-inf")  # time.monotonic() of the last request started


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
        batch_wait: float = 0.0,
        outcome: Outcome | None = None,
    ) -> None:
        self._count = count
        self._batch_wait = batch_wait
        self._outcome = outcome
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
        """Queue one batch for every receiver it is addressed to; never blocks, never raises."""
        if not alerts or self._closed:
            return
        for lane in self._lanes:
            name = lane.notifier.name
            batch = [a for a in alerts if a.for_receiver(name)]
            if not batch:
                continue
            if lane.queue.qsize() >= self._queue_size:
                try:
                    dropped = lane.queue.get_nowait()
                    lane.queue.task_done()
                    self._count(name, "dropped")
                    self._report(name, dropped, False)
                except asyncio.QueueEmpty:
                    pass
            lane.queue.put_nowait(batch)

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
        left: dict[int, list[list[Alert]]] = {}
        for lane in self._lanes:
            batches = [lane.inflight] if lane.busy and lane.inflight is not None else []
            while not lane.queue.empty():
                batches.append(lane.queue.get_nowait())
                lane.queue.task_done()
            left[id(lane)] = batches
        for lane in self._lanes:
            if lane.task is not None:
                lane.task.cancel()
        for lane in self._lanes:
            if lane.task is not None:
                await asyncio.wait([lane.task])  # cancelled (or crashed): done either way
            dropped = len(left[id(lane)])
            for batch in left[id(lane)]:
                self._count(lane.notifier.name, "dropped")
                self._report(lane.notifier.name, batch, False)
            if dropped and self._log is not None:
                self._log.warning(
                    "alert_notifications_dropped",
                    receiver=lane.notifier.name,
                    batches=dropped,
                    why="not delivered before shutdown",
                )
            await lane.notifier.aclose()

    async def _work(self, lane: _Lane) -> None:
        while True:
            batch = list(await lane.queue.get())
            taken = 1
            lane.busy = True
            lane.inflight = batch
            try:
                wait = lane.last_send + self._batch_wait - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                while not lane.queue.empty():
                    batch.extend(lane.queue.get_nowait())
                    taken += 1
                batch[:] = _newest_per_alert(batch)
                lane.last_send = time.monotonic()
                ok = await self._deliver(lane.notifier, batch)
                self._report(lane.notifier.name, batch, ok)
            finally:
                lane.busy = False
                lane.inflight = None
                for _ in range(taken):
                    lane.queue.task_done()

    def _report(self, receiver: str, batch: list[Alert], ok: bool) -> None:
        if self._outcome is None:
            return
        try:
            self._outcome(receiver, batch, ok)
        except Exception:  # bookkeeping must not stop a receiver's worker
            if self._log is not None:
                self._log.exception("alert_outcome_failed", receiver=receiver)

    async def _deliver(self, notifier: Notifier, batch: list[Alert]) -> bool:
        delay = self._backoff
        error = ""
        for attempt in range(1, self._attempts + 1):
            started = time.monotonic()
            try:
                await notifier.send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure is retried the same way
                error = _describe(exc)
                if attempt >= self._attempts:
                    self._count(notifier.name, "failure")
                    if self._log is not None:
                        self._log.error(
                            "alert_notification_failed",
                            receiver=notifier.name,
                            url=notifier.safe_url,
                            attempts=attempt,
                            alerts=len(batch),
                            error=error,
                        )
                    return False
                self._count(notifier.name, "retry")  # counted per attempt, logged once per batch below
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            self._count(notifier.name, "success")
            if self._log is not None and attempt > 1:
                # One line per batch that needed retries, with their count (not one per attempt).
                self._log.warning(
                    "alert_notification_retried",
                    receiver=notifier.name,
                    url=notifier.safe_url,
                    retries=attempt - 1,
                    alerts=len(batch),
                    last_error=error,
                )
            elif self._log is not None:
                self._log.debug(
                    "alert_notification_sent",
                    receiver=notifier.name,
                    alerts=len(batch),
                    attempt=attempt,
                    seconds=round(time.monotonic() - started, 4),
                )
            return True
        return False


def _newest_per_alert(batch: list[Alert]) -> list[Alert]:
    """One notice per alert, the newest, in the order of their last occurrence."""
    newest: dict[str, Alert] = {}
    for alert in batch:
        fingerprint = alert.fingerprint
        newest.pop(fingerprint, None)
        newest[fingerprint] = alert
    return list(newest.values())


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {' '.join(text.split())[:300]}"
