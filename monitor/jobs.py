"""The job runner: what one scheduled wake-up of a probe does, and the runs in flight.

A job runs the probe's scenario on its target's long-lived client and hands the result
to the pipeline. The runner knows the current probes and clients (the daemon swaps
them on reload), refuses new runs once stopping, and lets in-flight runs finish (or
cancels them after a grace) at shutdown. The start-up janitor runs each scenario's
`janitor` hook, so no scenario is named here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from monitor.config import ProbeConfig, TargetConfig
from monitor.http import TargetClient
from monitor.pipeline import Pipeline
from monitor.probes import SCENARIOS
from monitor.probes.runner import run_probe


class JobRunner:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.clients: dict[str, tuple[TargetConfig, TargetClient]] = {}
        self.probes: dict[str, ProbeConfig] = {}
        self.member = ""  # the fleet member tag of what the scenarios write ('' alone)
        self.stopping = False
        self._inflight: set[asyncio.Task[Any]] = set()
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
                SCENARIOS[probe.scenario], client, probe.options,
                probe=probe.name, target=target.name, timeout=probe.deadline, step_timeout=probe.step_timeout,
                member=self.member,
            )
            self.pipeline.handle(result)
        finally:
            self._inflight.discard(task)

    async def delete_stale_runs(self) -> None:
        """Start-up janitor: what a killed daemon left behind (each scenario's `janitor` hook,
        e.g. mlflow.delete_stale_runs and mlflow_registry.delete_stale_versions)."""
        for probe in list(self.probes.values()):
            janitor = SCENARIOS[probe.scenario].janitor
            if janitor is None:
                continue
            _, client = self.clients[probe.target]
            try:
                deleted = await janitor(client, probe.options, probe.name, probe.deadline, self.member)
            except Exception as exc:  # the target may be down at start: the probe itself reports that
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
