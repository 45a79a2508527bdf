"""The job runner: what one scheduled wake-up of a probe does, and the runs in flight.

A job runs the probe's scenario on its target's long-lived client and hands the result
to the pipeline. The runner knows the current probes and clients (the daemon swaps
them on reload), refuses new runs once stopping, and lets in-flight runs finish (or
cancels them after a grace) at shutdown. The janitor runs each scenario's `janitor` (and
`sweep`) hook, at start-up and after a run that may have left litter, so no scenario is
named here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from monitor.config import ProbeConfig, TargetConfig
from monitor.http.client import TargetClient
from monitor.pipeline import Pipeline
from monitor.results import ProbeResult
from monitor.scenario.registry import SCENARIOS
from monitor.scenario.runner import run_probe


class JobRunner:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.clients: dict[str, tuple[TargetConfig, TargetClient]] = {}
        self.probes: dict[str, ProbeConfig] = {}
        self.member = ""  # the fleet member tag of what the scenarios write ('' alone)
        self.stopping = False
        self._inflight: set[asyncio.Task[Any]] = set()
        self._sweep_after: dict[str, float] = {}  # probe -> monotonic time its litter may be swept
        self._sweep_artifacts: dict[str, set[str]] = {}  # probe -> leftovers to sweep then
        # Runs a coroutine as a task someone holds on to (the daemon's background set).
        self.background: Callable[[Coroutine[Any, Any, Any]], None] = lambda coro: None
        self.log = structlog.get_logger("monitor.daemon")

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def job(self, name: str) -> None:
        """One scheduled run of probe `name` (the scheduler's job function)."""
        if self.stopping:
            return  # a wake-up queued before the pause: no new runs while stopping
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            probe = self.probes.get(name)
            if probe is None:
                return
            target, client = self.clients[probe.target]
            result = await run_probe(
                SCENARIOS[probe.scenario],
                client,
                probe.options,
                probe=probe.name,
                target=target.name,
                timeout=probe.deadline,
                step_timeout=probe.step_timeout,
                member=self.member,
            )
            self.pipeline.handle(result)
            self.sweep_if_due(probe, result)
        finally:
            self._inflight.discard(task)

    def sweep_if_due(self, probe: ProbeConfig, result: ProbeResult) -> None:
        """A run whose write may still complete on the server (runs/create timed out, the
        database went away before runs/delete) leaves something we have no id for. Once the
        target answers again and that is older than the deadline (so a replica's in-flight
        run is never touched), the janitor deletes it."""
        now = time.monotonic()
        if result.facts.sweep_pending():
            self._sweep_after.setdefault(probe.name, now + probe.deadline)
            self._sweep_artifacts.setdefault(probe.name, set()).update(str(p) for p in result.facts.leftovers())
        elif result.ok and self._sweep_after.get(probe.name, now + 1) <= now:
            del self._sweep_after[probe.name]
            leftovers = sorted(self._sweep_artifacts.pop(probe.name, set()))
            self.background(self.delete_stale_runs(only=probe.name, artifacts=leftovers))

    async def delete_stale_runs(self, only: str | None = None, artifacts: list[str] | None = None) -> None:
        """Start-up janitor: what a killed daemon left behind (each scenario's `janitor` hook:
        the write paths' stale runs, the registry path's stale versions).

        Also run for one probe after a run of it may have left something behind
        (`Facts.sweep_pending`), with what the run knew it left (its scenario's `sweep`)."""
        for probe in list(self.probes.values()):
            scenario = SCENARIOS[probe.scenario]
            janitor = scenario.janitor
            if janitor is None or (only is not None and probe.name != only):
                continue
            _, client = self.clients[probe.target]
            try:
                if artifacts and scenario.sweep is not None:
                    removed = await scenario.sweep(client, artifacts)
                    self.log.info("leftover_artifacts_deleted", probe=probe.name, paths=removed)
                deleted = await janitor(client, probe.options, probe.name, probe.deadline, self.member)
            except Exception as exc:  # the target may be down: the probe itself reports that
                self.log.info("stale_run_cleanup_skipped", probe=probe.name, error=str(exc))
                continue
            if deleted:
                self.log.warning("stale_runs_deleted", probe=probe.name, deleted=deleted)

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for the runs in flight, then cancel the rest."""
        self.stopping = True
        # Runs submitted in this same loop iteration have not registered yet: let them
        # start (they return at once, seeing the stop), then wait for the real ones.
        await asyncio.sleep(0)
        deadline = time.monotonic() + grace
        while self._inflight and time.monotonic() < deadline:
            await asyncio.wait(set(self._inflight), timeout=deadline - time.monotonic())
        pending = set(self._inflight)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
