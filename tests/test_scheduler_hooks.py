"""monitor/scheduler.py leans on private parts of APScheduler 3: fail loudly if they change shape.

`_LoopTimerScheduler` overrides `AsyncIOScheduler._start_timer` and calls `_stop_timer`,
`_process_jobs` (which must return the seconds to the next run, or None) and the
`_eventloop` / `_timeout` attributes. A new APScheduler release may rename or reshape any
of them without notice (they are private); the lock file pins the version, and this test
names the hook that moved, so an upgrade fails here and not in production.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import BaseScheduler

from monitor.scheduler import _LoopTimerScheduler

# (class that must define it, method, parameter names after self)
HOOKS = [
    (AsyncIOScheduler, "_start_timer", ["wait_seconds"]),
    (AsyncIOScheduler, "_stop_timer", []),
    (AsyncIOScheduler, "wakeup", []),
    (BaseScheduler, "_process_jobs", []),
]


@pytest.mark.parametrize(("owner", "name", "params"), HOOKS, ids=[h[1] for h in HOOKS])
def test_private_hook_keeps_its_shape(owner: type, name: str, params: list[str]) -> None:
    method = getattr(owner, name, None)
    assert callable(method), f"APScheduler {owner.__name__}.{name} is gone: monitor/scheduler.py overrides/calls it"
    got = [p for p in inspect.signature(method).parameters if p != "self"]
    assert got == params, (
        f"APScheduler {owner.__name__}.{name} changed shape: parameters {got}, monitor/scheduler.py expects {params}"
    )


def test_override_matches_the_base_signature() -> None:
    ours = inspect.signature(_LoopTimerScheduler._start_timer)
    base = inspect.signature(AsyncIOScheduler._start_timer)
    assert list(ours.parameters) == list(base.parameters), (
        f"_LoopTimerScheduler._start_timer{ours} no longer matches AsyncIOScheduler._start_timer{base}"
    )


def test_private_attributes_exist() -> None:
    for attribute in ("_eventloop", "_timeout"):
        assert hasattr(AsyncIOScheduler, attribute), (
            f"APScheduler AsyncIOScheduler.{attribute} is gone: _LoopTimerScheduler._start_timer uses it"
        )


async def test_process_jobs_returns_the_wait_and_the_timer_runs_due_jobs() -> None:
    """Behaviour, not only names: `_process_jobs` returns seconds (or None) and our timer runs the job."""
    ran = asyncio.Event()
    scheduler = _LoopTimerScheduler()
    returned: list[Any] = []
    original = scheduler._process_jobs

    def spy() -> Any:
        value = original()
        returned.append(value)
        return value

    scheduler._process_jobs = spy  # type: ignore[method-assign]
    scheduler.start()
    try:
        scheduler.add_job(ran.set, "interval", seconds=0.2, id="probe")
        await asyncio.wait_for(ran.wait(), 10)
    finally:
        scheduler.shutdown(wait=False)
    assert returned, "_process_jobs was never called by the timer"
    assert all(v is None or isinstance(v, (int, float)) for v in returned), (
        f"APScheduler _process_jobs returned {returned!r}: _start_timer expects seconds or None"
    )
    assert scheduler._eventloop is None or isinstance(scheduler._eventloop, asyncio.AbstractEventLoop)
