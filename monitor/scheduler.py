"""APScheduler wiring: one job per probe, no overlap, and the scheduler's own health.

A run that would overlap the previous one of the same probe is skipped and counted
(max_instances=1); runs missed while the loop was busy are coalesced and counted; how
late each run starts is a histogram. A heartbeat job proves the loop is alive.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.events import JobEvent as SchedulerEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.events import Event, Heartbeat, JobEvent, ScheduleLag

HEARTBEAT_JOB = "__heartbeat__"
_UTC = dt.UTC


class PhasedIntervalTrigger(IntervalTrigger):
    """Every `interval` on a fixed grid, `start_date + k * interval`, after an early first run.

    APScheduler's IntervalTrigger counts each run from the previous one, so a probe keeps
    the phase of its first run forever; first runs all come within a couple of seconds of
    start-up (for /readyz), so 1,000 probes at 10 s would fire in a one-second burst every
    ten seconds. Here the first run stays early (it is the job's explicit next_run_time)
    and the later runs fall on a grid whose offset is drawn over the whole interval, so the
    load is even. The run after the first comes at least half an interval after it.
    """

    __slots__ = ()

    def get_next_fire_time(self, previous_fire_time: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        if previous_fire_time is None:
            return cast("dt.datetime | None", super().get_next_fire_time(previous_fire_time, now))
        start = self.start_date.timestamp()
        earliest = previous_fire_time.timestamp() + self.interval_length * 0.5
        steps = max(0, math.ceil((earliest - start) / self.interval_length))
        return dt.datetime.fromtimestamp(start + steps * self.interval_length, tz=self.timezone)


class _LoopTimerScheduler(AsyncIOScheduler):
    """AsyncIOScheduler whose own timer runs the due jobs directly.

    Its timer calls `wakeup`, which is written for calls from any thread and so always
    goes through call_soon_threadsafe: a self-pipe write and one more loop turn for every
    run. The timer fires on the loop's thread anyway; `wakeup` from elsewhere is unchanged.
    """

    def _start_timer(self, wait_seconds: float | None) -> None:
        self._stop_timer()
        if wait_seconds is not None:
            self._timeout = self._eventloop.call_later(wait_seconds, self._on_timer)

    def _on_timer(self) -> None:
        self._stop_timer()
        self._start_timer(self._process_jobs())


class ProbeScheduler:
    """Schedules the probes' jobs; what it sees (trouble, lag, heartbeat) it reports as
    typed events through `emit` (the daemon hands them to the pipeline's sinks)."""

    def __init__(
        self, emit: Callable[[Event], None], heartbeat_interval: float = 2.0, first_run_spread: float = 2.0
    ) -> None:
        self._emit = emit
        self._heartbeat_interval = heartbeat_interval
        self._first_run_spread = first_run_spread
        self._scheduler = _LoopTimerScheduler(timezone=_UTC)
        self._scheduler.add_listener(
            self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_SUBMITTED
        )
        logging.getLogger("apscheduler").setLevel(logging.ERROR)  # we count and log these ourselves

    def start(self) -> None:
        self._scheduler.add_job(
            self._beat,
            IntervalTrigger(seconds=self._heartbeat_interval, timezone=_UTC),
            id=HEARTBEAT_JOB,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=_now(),
        )
        self._scheduler.start()

    def add_probe(self, name: str, interval: float, job: Callable[[str], Awaitable[Any]]) -> None:
        """Schedule a probe; its first run comes after a small random spread, not all at once.

        The later runs keep a random phase over the whole interval (PhasedIntervalTrigger),
        so probes of the same interval do not all fire together.
        """
        now = _now()
        # A tenth of the interval at most, up to first_run_spread; with many probes the window
        # grows by 10 ms a probe (up to half the interval) so hundreds of first runs do not
        # start in the same second.
        crowd = 0.01 * len(self._scheduler.get_jobs())
        if crowd > self._first_run_spread:
            window = min(crowd, interval * 0.5)
        else:
            window = min(self._first_run_spread, interval * 0.1)
        spread = random.uniform(0, window)
        phase = random.uniform(0, interval)
        self._scheduler.add_job(
            job,
            PhasedIntervalTrigger(seconds=interval, start_date=now + dt.timedelta(seconds=phase), timezone=_UTC),
            args=[name],
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(interval)),
            next_run_time=now + dt.timedelta(seconds=spread),
            replace_existing=True,
        )

    def remove_probe(self, name: str) -> None:
        if self._scheduler.get_job(name) is not None:
            self._scheduler.remove_job(name)

    def probe_names(self) -> list[str]:
        return [job.id for job in self._scheduler.get_jobs() if job.id != HEARTBEAT_JOB]

    def pause(self) -> None:
        """Stop handing out new runs (graceful shutdown); in-flight runs carry on."""
        if self._scheduler.running:
            self._scheduler.pause()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    async def _beat(self) -> None:
        self._emit(Heartbeat(time.time()))

    def _on_event(self, event: SchedulerEvent) -> None:
        probe = event.job_id
        if probe == HEARTBEAT_JOB:
            return
        # APScheduler reports a skipped run as a JobSubmissionEvent too: branch on the code.
        if event.code == EVENT_JOB_SUBMITTED and isinstance(event, JobSubmissionEvent):
            if event.scheduled_run_times:
                lag = (_now() - event.scheduled_run_times[-1]).total_seconds()
                self._emit(ScheduleLag(probe, lag))
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            self._emit(JobEvent(probe, "skipped", "previous run still in progress"))
        elif event.code == EVENT_JOB_MISSED:
            self._emit(JobEvent(probe, "missed", "run time passed while the loop was busy"))
        elif event.code == EVENT_JOB_ERROR and isinstance(event, JobExecutionEvent):
            self._emit(JobEvent(probe, "error", repr(event.exception)))


def _now() -> dt.datetime:
    return dt.datetime.now(_UTC)
