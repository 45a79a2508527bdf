"""Wiring and lifecycle: config -> scheduler -> scenario -> result -> sinks.

The daemon owns the long-lived pieces (clients, scheduler, metric registry, HTTP server)
and the three lifecycle moves: start, reload (SIGHUP or POST /-/reload; a bad config
keeps the old one running) and graceful stop (SIGTERM/SIGINT: stop scheduling, let
in-flight runs finish and clean up, then exit 0).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import ssl
import time
from typing import Any, Coroutine

import structlog
from prometheus_client import CollectorRegistry

from monitor import __version__
from monitor.alerting.quorum import QuorumGate
from monitor.alerting.sink import AlertSink
from monitor.clients import make_client
from monitor.config import Config, ConfigError, ProbeConfig, TargetConfig, load_config, parse_listen
from monitor.crosscheck import cross_check, needs_cross_check
from monitor.diagnosis import is_monitor_fault
from monitor.fleet import alerting_for, fleet_status, identity, run_member, warn_fleet_webhooks
from monitor.http import TargetClient, redact_url
from monitor.logsetup import Redactor, configure_logging
from monitor.probes import SCENARIOS
from monitor.probes.mlflow import delete_leftover_artifacts
from monitor.probes.runner import run_probe
from monitor.results import ProbeResult
from monitor.scheduler import ProbeScheduler
from monitor.server import Endpoints, MonitorHTTPServer
from monitor.sinks import Sink
from monitor.sinks.history import HistorySink
from monitor.sinks.logging import LogSink
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from monitor.webconfig import ServerSecurity, ServerTLS, WebConfig

STOP_GRACE_SECONDS = 6.0
ALERT_FLUSH_SECONDS = 2.0
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_STALE_AFTER = 15.0


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        listen: str | None = None,
        *,
        web_config: WebConfig | None = None,
        enable_lifecycle: bool = False,
    ) -> None:
        self.config = config
        self.web_config = web_config
        self.enable_lifecycle = enable_lifecycle
        self.config_path = config_path
        self.listen = listen or config.listen
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = MetricsSink(self.registry, config.metrics.buckets)
        self.history = HistorySink()
        self.alerts = AlertSink(alerting_for(config), self.metrics)
        self.alerts.gate = QuorumGate(config.peers, config.location) if config.peers is not None else None
        # The alert sink reads root_cause, so it is fed the cross-checked result like every sink.
        self.sinks: list[Sink] = [self.metrics, self.history, LogSink(), self.alerts]
        for sink in self.sinks:  # zero from start: increase() sees the first error
            self.metrics.sink_errors.labels(sink.name)
        # A run the monitor itself spoiled (no connection of its own in time) says nothing
        # about the target: shown in /status and the log, counted as a job event, not a failure.
        self.monitor_fault_sinks: list[Sink] = [self.history, self.sinks[2]]
        self.log = structlog.get_logger("monitor.daemon")
        self.scheduler = ProbeScheduler(self, heartbeat_interval=HEARTBEAT_INTERVAL)
        self._clients: dict[str, tuple[TargetConfig, TargetClient]] = {}
        self._probes: dict[str, ProbeConfig] = {}
        self._inflight: set[asyncio.Task[Any]] = set()
        self._sweep_after: dict[str, float] = {}  # probe -> monotonic time its litter may be swept
        self._sweep_artifacts: dict[str, set[str]] = {}  # probe -> artifact paths to delete then
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_beat = time.monotonic()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: MonitorHTTPServer | None = None
        self._reload_lock: asyncio.Lock | None = None
        self.heartbeat_stale_after = HEARTBEAT_STALE_AFTER
        self._scrub = Redactor(config.secret_values()).scrub

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        host, port = parse_listen(self.listen)
        legacy = self.config.tls
        try:
            security = (
                ServerSecurity(self.web_config, ServerTLS(legacy.cert_file, legacy.key_file) if legacy else None)
                if self.web_config is not None or legacy is not None
                else None
            )
        except (ssl.SSLError, OSError, ValueError) as exc:  # the files changed since validation
            self.log.error("tls_setup_failed", error=str(exc))
            return 2
        try:
            self._server = MonitorHTTPServer(
                (host, port), self._endpoints(), security=security, lifecycle=self.enable_lifecycle
            )
        except OSError as exc:
            self.log.error("listen_failed", listen=self.listen, error=str(exc))
            return 2
        self._apply(self.config)
        warn_fleet_webhooks(self.config, self.log)
        await self.alerts.start(self._probe_targets())
        self._server.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.request_stop)
        self._loop.add_signal_handler(signal.SIGHUP, lambda: self._background(self.reload()))
        # What start-up built (modules, config models, schedules) mostly stays: moved out of
        # the collector's sight, full collections stop rescanning it. Collected first, so
        # no garbage cycle is frozen with it; a reload's objects are collected as usual.
        gc.collect()
        gc.freeze()
        self.scheduler.start()
        self._background(self._delete_stale_runs())
        self.log.info(
            "monitor_started", version=__version__, listen=self.listen, pid=os.getpid(),
            probes=sorted(self._probes), targets={n: redact_url(c.url) for n, (c, _) in self._clients.items()},
            tls=security is not None and security.tls_enabled,
            basic_auth=security is not None and security.auth is not None,
            lifecycle=self.enable_lifecycle,
            **identity(self.config),
        )
        await self._stop.wait()
        await self._shutdown()
        return 0

    async def _delete_stale_runs(self, only: str | None = None, artifacts: list[str] | None = None) -> None:
        """Start-up janitor: what a killed daemon left behind (each scenario's `janitor` hook,
        e.g. mlflow.delete_stale_runs and mlflow_registry.delete_stale_versions).

        Also run for one probe after a run of it may have left a run or an artifact behind
        (`cleanup_pending`, `leftover_artifacts`)."""
        for probe in list(self._probes.values()):
            janitor = SCENARIOS[probe.scenario].janitor
            if janitor is None or (only is not None and probe.name != only):
                continue
            _, client = self._clients[probe.target]
            try:
                if artifacts:
                    removed = await delete_leftover_artifacts(client, artifacts)
                    self.log.info("leftover_artifacts_deleted", probe=probe.name, paths=removed)
                deleted = await janitor(client, probe.options, probe.name, probe.deadline, run_member(self.config))
            except Exception as exc:  # MLflow may be down at start: the probe itself reports that
                self.log.info("stale_run_cleanup_skipped", probe=probe.name, error=str(exc))
                continue
            if deleted:
                self.log.warning("stale_runs_deleted", probe=probe.name, deleted=deleted)

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` as a task the daemon holds on to: the loop keeps only weak references."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def request_stop(self) -> None:
        if self._stop is not None and not self._stop.is_set():
            self.log.info("monitor_stopping", inflight=len(self._inflight))
            self._stop.set()

    async def _shutdown(self) -> None:
        self.scheduler.pause()
        # Runs submitted in this same loop iteration have not registered yet: let them
        # start (they return at once, seeing the stop), then wait for the real ones.
        await asyncio.sleep(0)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self._inflight and time.monotonic() < deadline:
            await asyncio.wait(set(self._inflight), timeout=deadline - time.monotonic())
        pending = set(self._inflight)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        self.scheduler.shutdown()
        if self.alerts.gate is not None:
            await self.alerts.gate.close()  # its pending verdicts reach the dispatcher before the flush
        await self.alerts.stop(flush_timeout=ALERT_FLUSH_SECONDS)
        for _, client in self._clients.values():
            await client.aclose()
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)
        self.log.info("monitor_stopped")

    # -- configuration ---------------------------------------------------------------

    def _apply(self, config: Config) -> None:
        """Make the running set of clients, jobs and series match `config`."""
        old_clients = self._clients
        clients: dict[str, tuple[TargetConfig, TargetClient]] = {}
        stale: list[TargetClient] = []
        for target in config.targets:
            previous = old_clients.get(target.name)
            if previous is not None and previous[0] == target:
                clients[target.name] = previous
            else:
                clients[target.name] = (target, make_client(target))
                if previous is not None:
                    stale.append(previous[1])
        stale.extend(c for name, (_, c) in old_clients.items() if name not in clients)
        self._clients = clients
        own = config.own_probes()
        for name in set(self._probes) - {p.name for p in own}:
            self.scheduler.remove_probe(name)
            self.metrics.unregister(name)
            self.history.forget(name)
        for probe in own:
            scenario = SCENARIOS[probe.scenario]
            target = config.target(probe.target)
            self.metrics.register(
                ProbeSeries(target.name, probe.name, scenario.steps_for(probe.options), probe.deadline, asgard=target.kind == "asgard")
            )
            if self._probes.get(probe.name) != probe or probe.name not in self.scheduler.probe_names():
                self.scheduler.add_probe(probe.name, probe.interval, self._job)
        self._probes = {p.name: p for p in own}
        self.config = config
        for client in stale:
            self._background(self._close_later(client))

    async def _close_later(self, client: TargetClient) -> None:
        await asyncio.sleep(STOP_GRACE_SECONDS)  # let in-flight runs on the old client finish
        await client.aclose()

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config file; a bad one keeps the old config running."""
        assert self._reload_lock is not None
        async with self._reload_lock:
            on_defaults = self.config_path is None and not os.environ.get("SYNTHETIC_MONITOR_CONFIG")
            message = "no config file to reload (running on defaults)" if on_defaults else "reloaded"
            try:
                config = load_config(self.config_path)
            except ConfigError as exc:
                self.metrics.config_reload.set(0)
                self.log.error("config_reload_failed", error=str(exc))
                return False, str(exc)
            try:
                self._apply(config)
            except Exception as exc:
                # Whatever validation missed (a file that changed in between): the old
                # config keeps running, and the gauge says the reload failed.
                self.metrics.config_reload.set(0)
                message = f"the new configuration does not apply: {type(exc).__name__}: {exc}"
                self.log.error("config_reload_failed", error=self._scrub(message))
                return False, self._scrub(message)
            self._scrub = Redactor(config.secret_values()).scrub
            self._reconfigure_gate(config)
            self.alerts.reconfigure(alerting_for(config), self._probe_targets())
            warn_fleet_webhooks(config, self.log)
            configure_logging(config.log.level, config.log.format, config.secret_values())
            self.metrics.config_reload.set(1)
            self.log.info("config_reloaded", probes=sorted(self._probes), note=message)
            return True, message

    def _reconfigure_gate(self, config: Config) -> None:
        gate = self.alerts.gate
        if config.peers is None:
            self.alerts.gate = None
            if gate is not None:
                self._background(gate.close())
        elif gate is None:
            self.alerts.gate = QuorumGate(config.peers, config.location)
        else:
            gate.reconfigure(config.peers, config.location)

    # -- probe runs ------------------------------------------------------------------

    async def _job(self, name: str) -> None:
        if self._stop is not None and self._stop.is_set():
            return  # a wake-up queued before the pause: no new runs while stopping
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            probe = self._probes.get(name)
            if probe is None:
                return
            target, client = self._clients[probe.target]
            result = await run_probe(
                SCENARIOS[probe.scenario], client, probe.options,
                probe=probe.name, target=target.name, timeout=probe.deadline, step_timeout=probe.step_timeout,
                member=run_member(self.config),
            )
            self.dispatch(result)
            self._sweep_if_due(probe, result)
        finally:
            self._inflight.discard(task)

    def _sweep_if_due(self, probe: ProbeConfig, result: ProbeResult) -> None:
        """A run whose write may still complete on the server (runs/create timed out, the
        database went away before runs/delete) leaves a run we have no id for. Once the target
        answers again and that run is older than the deadline (so a replica's in-flight run
        is never touched), the janitor deletes it."""
        now = time.monotonic()
        if result.facts.get("cleanup_pending"):
            self._sweep_after.setdefault(probe.name, now + probe.deadline)
            leftovers = result.facts.get("leftover_artifacts") or []
            self._sweep_artifacts.setdefault(probe.name, set()).update(str(p) for p in leftovers)
        elif result.ok and self._sweep_after.get(probe.name, now + 1) <= now:
            del self._sweep_after[probe.name]
            artifacts = sorted(self._sweep_artifacts.pop(probe.name, set()))
            self._background(self._delete_stale_runs(only=probe.name, artifacts=artifacts))

    def dispatch(self, result: ProbeResult) -> None:
        """Hand a result to every sink; a failing sink is logged, never fatal."""
        result = result.redacted(self._scrub)
        if needs_cross_check(result):  # skips copying the history for every other result
            result = cross_check(result, self.config, self.history.last_results())
        sinks = self.sinks
        if is_monitor_fault(result):
            sinks = self.monitor_fault_sinks
            failed = result.failed_step
            self.job_event(result.probe, "error", failed.error if failed else None)
        for sink in sinks:
            try:
                sink.handle(result)
            except Exception:
                name = getattr(sink, "name", type(sink).__name__)  # a sink added by a test may lack one
                self.metrics.sink_errors.labels(name).inc()
                self.log.exception("sink_failed", sink=name, probe=result.probe)

    # -- scheduler observer ----------------------------------------------------------

    def _probe_targets(self) -> list[tuple[str, str]]:
        return [(p.name, p.target) for p in self._probes.values()]

    def job_event(self, probe: str, event: str, detail: str | None = None) -> None:
        self.metrics.job_event(probe, event)
        self.alerts.job_event(probe, event)
        self.log.warning("scheduler_job_event", probe=probe, job_event=event, detail=detail)

    def schedule_lag(self, probe: str, seconds: float) -> None:
        self.metrics.observe_lag(probe, seconds)

    def heartbeat(self) -> None:
        self._last_beat = time.monotonic()
        self.metrics.beat()

    # -- HTTP endpoints (called from the server thread) ------------------------------

    def _endpoints(self) -> Endpoints:
        return Endpoints(
            metrics=self.metrics.render,
            healthy=self._healthy,
            ready=self._ready,
            status=self._status,
            reload=self._reload_from_thread,
        )

    def _healthy(self) -> tuple[bool, str]:
        age = time.monotonic() - self._last_beat
        if not self.scheduler.running:
            return False, "scheduler is not running"
        if age > self.heartbeat_stale_after:
            return False, f"scheduler heartbeat is stale ({age:.1f}s old)"
        return True, f"ok (heartbeat {age:.1f}s ago)"

    def _ready(self) -> tuple[bool, str]:
        names = list(self._probes)
        if self.history.all_ran(names):
            return True, "ok: every probe has run"
        waiting = [n for n in names if self.history.last(n) is None]
        return False, f"waiting for first run of: {', '.join(waiting)}"

    def _status(self) -> dict[str, Any]:
        data = self.history.snapshot(list(self._probes))
        data["version"] = __version__
        data["healthy"], _ = self._healthy()
        data["ready"], _ = self._ready()
        data.update(identity(self.config))
        data["fleet"] = fleet_status(self.config)
        return data

    def _reload_from_thread(self) -> tuple[bool, str]:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self.reload(), self._loop)
        return future.result(timeout=30)
