"""Wiring and lifecycle: config -> scheduler -> scenario -> result -> pipeline -> sinks.

The daemon builds the long-lived pieces (pipeline and sinks, job runner, scheduler,
HTTP server) and owns the three lifecycle moves: start, reload (SIGHUP or POST
/-/reload; a bad config keeps the old one running) and graceful stop (SIGTERM/SIGINT:
stop scheduling, let in-flight runs finish and clean up, then exit 0). What a job does
is monitor/jobs.py; what the endpoints answer is monitor/endpoints.py.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import ssl
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Counter

from monitor import __version__
from monitor.alerting.peers import PeerMetrics
from monitor.alerting.quorum import QuorumGate
from monitor.alerting.reachability import ReceiverCheck
from monitor.alerting.sink import AlertSink
from monitor.clients import make_client
from monitor.config import Config, ConfigError, ProbeConfig, TargetConfig, load_config, parse_listen, ssl_reason
from monitor.culprit import TargetCulprit
from monitor.events import ConfigLoaded, Event, Heartbeat
from monitor.fleet import alerting_for, identity, run_member, warn_fleet_webhooks
from monitor.heartbeat import HeartbeatPusher
from monitor.http.client import TargetClient, redact_url
from monitor.jobs import JobRunner
from monitor.logsetup import Redactor, configure_logging
from monitor.maintenance import Maintenance
from monitor.pipeline import CrossCheck, Pipeline, Redact
from monitor.results import ProbeResult
from monitor.scenario.registry import SCENARIOS
from monitor.scheduler import ProbeScheduler
from monitor.sinks import Sink
from monitor.sinks.errors import SinkErrors
from monitor.sinks.exposition import Exposition
from monitor.sinks.history import HistorySink
from monitor.sinks.logging import LogSink
from monitor.sinks.maintenance import MaintenanceGauge
from monitor.sinks.metrics import MetricsSink, ProbeSeries
from monitor.sinks.process import declare_process_metrics
from monitor.web.endpoints import EndpointLogic
from monitor.web.face import Face
from monitor.web.pages.data import PageSource, ProbeInfo
from monitor.web.server import Endpoints, MonitorHTTPServer
from monitor.web.webconfig import ServerSecurity, ServerTLS, WebConfig

STOP_GRACE_SECONDS = 6.0
ALERT_FLUSH_SECONDS = 2.0
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_STALE_AFTER = 15.0


def startup_error(message: str) -> None:
    """A start-up failure as the one line on stderr the operator reads first (the log has it too)."""
    print(f"synthetic-monitor: {message}", file=sys.stderr, flush=True)


# The collector's generation thresholds (CPython's default: 700, 10, 10). A hanging run's
# objects (its connection, request, timers) live for its deadline, seconds: at 700 they
# outlived two young collections and reached the old generation, which was then collected
# in full every ~10 s in a wide outage, 130-280 ms each with 3,000 firing alerts on the
# heap, the loop stopped meanwhile (gc.callbacks timings, tests/perf/wide_outage.py
# --fleet 3). At 50,000 a young collection comes about once a second, most such objects
# die before it, and full collections became rare (3 in the run instead of 41).
GC_THRESHOLDS = (50_000, 10, 10)


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        listen: str | None = None,
        *,
        web_config: WebConfig | None = None,
        enable_lifecycle: bool = False,
        port_file: str | None = None,
        read_only: bool = False,
    ) -> None:
        self.config = config
        self.port_file = port_file
        self.read_only = read_only  # --read-only: kept across reloads
        self.web_config = web_config
        self.enable_lifecycle = enable_lifecycle
        self.config_path = config_path
        self.listen = listen or config.listen
        self.exposition = Exposition()
        self.registry = self.exposition.registry
        self.metrics = MetricsSink(self.exposition, config.metrics.buckets)
        self.web_reload_failures = Counter(
            "synthetic_monitor_web_config_reload_failures",
            "Reloads of --web.config.file (SIGHUP or a changed file) that kept the last good settings.",
            registry=self.exposition.part(),
        )
        declare_process_metrics(self.exposition)
        self.receiver_check = ReceiverCheck(self.exposition.part(), structlog.get_logger("monitor.alerting"))
        self.history = HistorySink()
        errors = SinkErrors(self.exposition)
        self.alerts = AlertSink(alerting_for(config), self.exposition, errors=errors)
        self.peer_metrics = PeerMetrics(self.exposition)
        self.alerts.gate = self._gate(config)
        self.maintenance = Maintenance()
        self.alerts.maintenance = self.maintenance
        gauge = MaintenanceGauge(self.maintenance, self._probe_pairs)
        self.exposition.add(gauge, gauge.render)
        self.loaded_at: float | None = None
        self.redact = Redact(Redactor(config.secret_values()).scrub)
        self.cross_check = CrossCheck(config)
        self.culprit = TargetCulprit(config)  # after the cross-check: it reads root_cause
        # The alert sink reads root_cause, so it is fed the cross-checked result like every sink.
        self.pipeline = Pipeline(
            [self.redact, self.cross_check, self.culprit], [self.metrics, self.history, LogSink(), self.alerts], errors
        )
        self.log = structlog.get_logger("monitor.daemon")
        self.runner = JobRunner(self.pipeline)
        self.runner.background = self._background
        self.scheduler = ProbeScheduler(self.emit, heartbeat_interval=HEARTBEAT_INTERVAL)
        self.endpoints = EndpointLogic(
            self.history,
            lambda: list(self.runner.probes),
            lambda: self.config,
            lambda: self.scheduler.running,
            HEARTBEAT_STALE_AFTER,
            alerting_ok=self.alerts.healthy,
        )
        self.heartbeat = HeartbeatPusher(self.exposition, self._healthy_for_heartbeat)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: MonitorHTTPServer | None = None
        self._reload_lock: asyncio.Lock | None = None

    @property
    def sinks(self) -> list[Sink]:
        return self.pipeline.sinks

    @property
    def probes(self) -> dict[str, ProbeConfig]:
        return self.runner.probes

    @property
    def heartbeat_stale_after(self) -> float:
        return self.endpoints.stale_after

    @heartbeat_stale_after.setter
    def heartbeat_stale_after(self, seconds: float) -> None:
        self.endpoints.stale_after = seconds

    def dispatch(self, result: ProbeResult) -> ProbeResult:
        """Hand a result to the pipeline (enrichers, then every sink)."""
        return self.pipeline.handle(result)

    def emit(self, event: Event) -> None:
        """A monitor event (from the scheduler, or a reload) to every sink that takes events."""
        if isinstance(event, Heartbeat):
            self.endpoints.beat()
        self.pipeline.handle_event(event)

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        host, port = parse_listen(self.listen)
        legacy = self.config.tls
        try:
            security = (
                ServerSecurity(
                    self.web_config,
                    ServerTLS(legacy.cert_file, legacy.key_file) if legacy else None,
                    on_reload_failure=self.web_reload_failures.inc,
                )
                if self.web_config is not None or legacy is not None
                else None
            )
        except (ssl.SSLError, OSError, ValueError) as exc:  # the files changed since validation
            self.log.error("tls_setup_failed", error=str(exc))
            startup_error(f"the TLS certificate or key does not load: {ssl_reason(exc)}")
            return 2
        try:
            self._server = MonitorHTTPServer(
                (host, port), self._server_endpoints(), security=security, lifecycle=self.enable_lifecycle
            )
        except OSError as exc:
            self.log.error("listen_failed", listen=self.listen, error=str(exc))
            startup_error(f"cannot listen on {self.listen}: {exc.strerror or exc}")
            return 2
        # The socket listens from here on (connections wait in its backlog until the server
        # thread starts): say the bound port, which is the only way to learn it for port 0.
        bound = int(self._server.server_address[1])
        self.log.info("listening", address=f"{host}:{bound}", port=bound)
        if self.port_file:
            try:
                write_port_file(self.port_file, bound)
            except OSError as exc:
                self.log.error("port_file_failed", path=self.port_file, error=str(exc))
                self._server.server_close()
                return 2
        self._apply(self.config)
        warn_fleet_webhooks(self.config, self.log)
        await self.alerts.start(self._probe_targets())
        self._background(self.receiver_check.run(self.config.alerting.receivers))  # a warning, never a refusal
        self._server.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, self.request_stop)
        self._loop.add_signal_handler(signal.SIGHUP, lambda: self._background(self.reload()))
        # What start-up built (modules, config models, schedules) mostly stays: moved out of
        # the collector's sight, full collections stop rescanning it. Collected first, so
        # no garbage cycle is frozen with it; a reload's objects are collected as usual.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        self.scheduler.start()
        self.heartbeat.start(self.config.heartbeat)
        self._background(self.runner.delete_stale_runs())
        self.log.info(
            "monitor_started",
            version=__version__,
            listen=self.listen,
            pid=os.getpid(),
            probes=sorted(self.runner.probes),
            targets={n: redact_url(c.url) for n, (c, _) in self.runner.clients.items()},
            tls=security is not None and security.tls_enabled,
            basic_auth=security is not None and security.auth is not None,
            lifecycle=self.enable_lifecycle,
            **identity(self.config),
        )
        await self._stop.wait()
        await self._shutdown()
        return 0

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` as a task the daemon holds on to: the loop keeps only weak references."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def request_stop(self) -> None:
        if self._stop is not None and not self._stop.is_set():
            self.log.info("monitor_stopping", inflight=self.runner.inflight)
            self.runner.stopping = True
            self._stop.set()

    async def _shutdown(self) -> None:
        await self.heartbeat.stop()  # a stopping daemon is not a healthy one
        self.scheduler.pause()
        await self.runner.drain(STOP_GRACE_SECONDS)
        self.scheduler.shutdown()
        if self.alerts.gate is not None:
            await self.alerts.gate.close()  # its pending verdicts reach the dispatcher before the flush
        await self.alerts.stop(flush_timeout=ALERT_FLUSH_SECONDS)
        for _, client in self.runner.clients.values():
            await client.aclose()
        if self._server is not None:
            await asyncio.to_thread(self._server.stop)
        self.log.info("monitor_stopped")

    # -- configuration ---------------------------------------------------------------

    def _apply(self, config: Config) -> None:
        """Make the running set of clients, jobs and series match `config`."""
        old_clients = self.runner.clients
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
        self.runner.clients = clients
        own = config.own_probes()
        for name in set(self.runner.probes) - {p.name for p in own}:
            self.scheduler.remove_probe(name)
            self.metrics.unregister(name)
            self.pipeline.forget(name)
        for probe in own:
            scenario = SCENARIOS[probe.scenario]
            target = config.target(probe.target)
            self.metrics.register(
                ProbeSeries(
                    target.name,
                    probe.name,
                    scenario.steps_for(probe.options),
                    probe.deadline,
                    probe.scenario,
                    probe.interval,
                )
            )
            if self.runner.probes.get(probe.name) != probe or probe.name not in self.scheduler.probe_names():
                self.scheduler.add_probe(probe.name, probe.interval, self.runner.job)
        self.runner.probes = {p.name: p for p in own}
        self.runner.member = run_member(config)
        self.maintenance.configure(
            config.maintenance, {p.name for p in config.probes}, {t.name for t in config.targets}
        )
        self.config = config
        self.loaded_at = time.time()
        self.cross_check.config = config
        self.culprit.config = config
        for client in stale:
            self._background(self._close_later(client))

    async def _close_later(self, client: TargetClient) -> None:
        await asyncio.sleep(STOP_GRACE_SECONDS)  # let in-flight runs on the old client finish
        await client.aclose()

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config file; a bad one keeps the old config running."""
        assert self._reload_lock is not None
        async with self._reload_lock:
            security = self._server.security if self._server is not None else None
            if security is not None:  # re-read --web.config.file too, as exporter-toolkit on SIGHUP
                await asyncio.to_thread(security.refresh, True)  # bcrypt-checks hashes: off the loop
            on_defaults = self.config_path is None and not os.environ.get("SYNTHETIC_MONITOR_CONFIG")
            message = "no config file to reload (running on defaults)" if on_defaults else "reloaded"
            try:
                config = load_config(self.config_path, read_only=self.read_only)
            except ConfigError as exc:
                self.emit(ConfigLoaded(ok=False))
                self.log.error("config_reload_failed", error=str(exc))
                return False, str(exc)
            try:
                self._apply(config)
            except Exception as exc:
                # Whatever validation missed (a file that changed in between): the old
                # config keeps running, and the gauge says the reload failed.
                self.emit(ConfigLoaded(ok=False))
                message = f"the new configuration does not apply: {type(exc).__name__}: {exc}"
                scrub = self.redact.scrub
                self.log.error("config_reload_failed", error=scrub(message))
                return False, scrub(message)
            self.redact.scrub = Redactor(config.secret_values()).scrub
            self._reconfigure_gate(config)
            self.alerts.reconfigure(alerting_for(config), self._probe_targets())
            warn_fleet_webhooks(config, self.log)
            self.heartbeat.reconfigure(config.heartbeat)
            configure_logging(config.log.level, config.log.format, config.secret_values())
            self._background(self.receiver_check.run(config.alerting.receivers))
            self.emit(ConfigLoaded(ok=True))
            self.log.info("config_reloaded", probes=sorted(self.runner.probes), note=message)
            return True, message

    def _reconfigure_gate(self, config: Config) -> None:
        gate = self.alerts.gate
        if config.peers is None:
            self.alerts.gate = None
            if gate is not None:
                self._background(gate.close())
        elif gate is None:
            self.alerts.gate = self._gate(config)
        else:
            gate.reconfigure(config.peers, config.location)

    def _gate(self, config: Config) -> QuorumGate | None:
        if config.peers is None:
            return None
        return QuorumGate(config.peers, config.location, metrics=self.peer_metrics)

    def _healthy_for_heartbeat(self) -> tuple[bool, str]:
        """The scheduler's heartbeat is fresh and the alert engine ticks: worth a push."""
        ok, why = self.endpoints.healthy()
        if not ok:
            return ok, why
        return self.alerts.health()

    def _probe_targets(self) -> list[tuple[str, str]]:
        return [(p.name, p.target) for p in self.runner.probes.values()]

    def _probe_pairs(self) -> list[tuple[str, str]]:
        """(probe, target) of the probes this daemon runs, from any thread."""
        return [(p.name, p.target) for p in list(self.runner.probes.values())]

    # -- HTTP endpoints (called from the server thread) ------------------------------

    def _server_endpoints(self) -> Endpoints:
        return Endpoints(
            metrics=self.exposition.chunks,
            healthy=self.endpoints.healthy,
            ready=self.endpoints.ready,
            status=self.endpoints.status,
            reload=self._reload_from_thread,
            face=Face(self._page_source(), self._maintenance_changed),
            verdicts=self.endpoints.verdicts,
        )

    def _page_source(self) -> PageSource:
        gate = lambda target, probe: (  # noqa: E731
            self.alerts.gate.verdict(target, probe) if self.alerts.gate is not None else "no peers (local verdict)"
        )
        return PageSource(
            history=self.history,
            probes=lambda: [ProbeInfo(p.name, p.target, p.scenario) for p in list(self.runner.probes.values())],
            maintenance=self.maintenance,
            identity=self._page_identity,
            alerts=self._firing,
            receivers=lambda: [r.label for r in self.alerts.config.receivers] if self.alerts.enabled else [],
            quorum=gate,
            reloaded_at=lambda: self.loaded_at,
        )

    def _page_identity(self) -> dict[str, Any]:
        config = self.config
        shard = config.shard
        who = identity(config)
        who["shard"] = f"member {shard.index} of {shard.count}" if shard is not None else None
        return who

    def _firing(self) -> list[Any]:
        """The engine's firing alerts from the server thread: the loop may change the
        state dict while we copy it, so try again (a copy takes microseconds)."""
        for _ in range(5):
            try:
                return self.alerts.firing()
            except RuntimeError:  # dictionary changed size during iteration
                continue
        return []

    def _maintenance_changed(self) -> None:
        """A runtime window changed (server thread): persist it on the loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.alerts.maintenance_changed)

    def _reload_from_thread(self) -> tuple[bool, str]:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self.reload(), self._loop)
        return future.result(timeout=30)


def write_port_file(path: str, port: int) -> None:
    """Write `port` to `path` atomically (a temp file renamed over it): a reader polling for
    the file sees either nothing or the whole number, never a partial write."""
    target = Path(path)
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.write_text(f"{port}\n", encoding="utf-8")
    os.replace(temp, target)
