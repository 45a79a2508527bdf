"""`AlertSink`: the daemon-facing side of alerting.

It feeds results and scheduler events to the pure `AlertEngine`, hands the
notifications it returns to the `Dispatcher` (queued, never awaited on the probe
path), mirrors the engine's state in `synthetic_monitor_alerts_firing`, logs every
fire and resolve, and keeps the state file current (written off the loop, at most about
once a second). A 1 s tick re-sends firing alerts before Alertmanager's resolve_timeout
could expire them, repeats them to webhooks every repeat_interval, and retries resolved
notices a receiver did not take. Its own failures are counted in
synthetic_monitor_sink_errors_total{sink="alerting"}: broken alerting must be visible.

Usage (the daemon wires it):

    sink = AlertSink(config.alerting, exposition, errors=sink_errors)
    await sink.start([(p.name, p.target) for p in config.probes])
    sink.handle(result)                 # for every ProbeResult, after the cross-check
    sink.handle_event(JobEvent(probe, "missed"))   # scheduler trouble
    sink.reconfigure(new.alerting, [(p.name, p.target) for p in new.probes])   # on reload
    await sink.stop()                    # on shutdown: flush, save state
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.alerting.alerts import Alert
from monitor.alerting.dispatcher import RESULTS, Dispatcher
from monitor.alerting.engine import AlertEngine
from monitor.alerting.state import (
    REASONS,
    WRITE_FAILED,
    WRONG_SHAPE,
    SnapshotSteps,
    StateFileError,
    StateWriter,
    drain,
    load_state,
    quarantine,
)
from monitor.config import AlertingConfig
from monitor.events import Event, JobEvent
from monitor.maintenance import Maintenance
from monitor.results import ProbeResult
from monitor.sinks.errors import SinkErrors
from monitor.sinks.exposition import Exposition, declare_in

GaugeKey = tuple[str, str, str]
QUORUM_STATE = "quorum"  # the gate's part of the state file (alerting/quorum.py)


class AlertSink:
    """Alerting as a sink: `handle` is synchronous, never raises and never waits on a receiver."""

    name = "alerting"
    tick_seconds = 1.0
    state_write_interval = 1.0
    # The streak of an alert already firing (every run of a failing probe) is written at
    # most this often: in a wide outage a 2 MB state every second held the GIL the probes
    # needed (tests/perf/wide_outage.py); a restart loses at most this much of a count.
    churn_write_interval = 15.0

    def __init__(
        self,
        config: AlertingConfig,
        registry: CollectorRegistry | Exposition,
        *,
        errors: SinkErrors | None = None,
        clock: Callable[[], float] = time.time,
        logger: Any = None,
    ) -> None:
        self.config = config
        own = declare_in(registry)
        self.alerts_firing = Gauge(
            "synthetic_monitor_alerts_firing",
            "Alerts the daemon's own engine holds firing.",
            ["alertname", "target", "probe"],
            registry=own,
        )
        self.notifications = Counter(
            "synthetic_monitor_notifications",
            "Alert notifications sent, by receiver and result.",
            ["receiver", "result"],
            registry=own,
        )
        self.state_file_errors = Counter(
            "synthetic_monitor_state_file_errors",
            "Alert state files that could not be used (moved aside) or written, by reason.",
            ["reason"],
            registry=own,
        )
        for reason in REASONS:
            self.state_file_errors.labels(reason)
        self._errors = errors if errors is not None else SinkErrors(own)
        self._clock = clock
        self._log = logger if logger is not None else structlog.get_logger("monitor.alerting")
        self._engine = AlertEngine(config, now=clock())
        self._dispatcher = self._make_dispatcher(config) if config.enabled else None
        self._gauged: collections.Counter[GaugeKey] = collections.Counter()
        self._saved_version = -1
        self._snapshot_version = -1
        self._saved_churn = self._snapshot_churn = 0
        self._churn_saved_at = float("-inf")
        self._save_error: str | None = None
        self._writer: StateWriter | None = None
        self._tick: asyncio.Task[None] | None = None
        self._last_tick = time.monotonic()
        self._retiring: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._started = False
        # Fleet mode: holds SyntheticProbeFailing back for the peers' votes (alerting/quorum.py).
        self.gate: Any = None
        # Maintenance windows (monitor/maintenance.py): results of a probe in one are held
        # back from the engine, and the runtime windows are kept in the state file.
        self.maintenance: Maintenance | None = None

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    # -- the probe path (synchronous, never raises) ------------------------------------

    def handle(self, result: ProbeResult) -> None:
        if not self.enabled:
            return
        try:
            if self.maintenance is not None and self.maintenance.active_for(result.probe, result.target, self._clock()):
                # Held, not resolved: the engine does not see the run at all, so nothing fires,
                # nothing resolves, and a firing alert stays firing (re-sent, never expired).
                return
            self._emit(self._engine.observe(result, self._clock()))
        except Exception:  # alerting must never break a probe run
            self._failed()
            self._log.exception("alert_sink_failed", probe=getattr(result, "probe", None))

    def handle_event(self, event: Event) -> None:
        """Scheduler trouble feeds SyntheticMonitorStalled; other events are not alerting's."""
        if isinstance(event, JobEvent):
            self.job_event(event.probe, event.event)

    def job_event(self, probe: str, event: str) -> None:
        if not self.enabled:
            return
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.job_event, probe, event)
            return
        try:
            self._emit(self._engine.job_event(probe, event, self._clock()))
        except Exception:
            self._failed()
            self._log.exception("alert_sink_failed", probe=probe, event=event)

    def firing(self) -> list[Alert]:
        return self._engine.firing() if self.enabled else []

    def healthy(self) -> bool:
        """The engine can alert: started and its re-send tick alive and fresh (any thread)."""
        return self.health()[0]

    def undelivered(self) -> dict[str, list[Alert]]:
        """Receiver -> resolved notices it has not taken yet (kept and retried)."""
        return self._engine.undelivered()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, probes: Iterable[tuple[str, str]]) -> None:
        """Load the saved state, start the receivers' workers and the re-send tick."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._started = True
        if not self.enabled:
            self._log.info("alerting_disabled")
            return
        now = self._clock()
        self._engine.started_at = now  # the grace period counts from start, not construction
        resolved = self._engine.reconfigure(self.config, list(probes), now)
        resolved += self._load_state(now)
        assert self._dispatcher is not None
        self._count_series(self._dispatcher.receivers)
        self._dispatcher.start()
        self._emit(resolved)
        self._emit(self._engine.due_resends(now), resend=True)
        self._sync_gauge()  # restored alerts fire again without a notification to a webhook
        self._save(force=True)
        self._ensure_tick()
        self._log.info(
            "alerting_started",
            receivers=self._dispatcher.receivers,
            firing=len(self._engine.firing()),
            grace_seconds=self.config.startup_grace,
            state_file=str(self.config.state_file or "") or None,
        )

    def reconfigure(self, config: AlertingConfig, probes: Iterable[tuple[str, str]]) -> None:
        """Apply a reloaded config: removed probes resolve, changed receivers are swapped."""
        try:
            self._reconfigure(config, list(probes))
        except Exception:  # a reload must not crash the daemon
            self._failed()
            self._log.exception("alerting_reconfigure_failed")

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Deliver what is queued (up to flush_timeout), then save the state."""
        if self._tick is not None:
            self._tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick
            self._tick = None
        if self._dispatcher is not None:
            await self._dispatcher.close(flush_timeout)
        if self._retiring:
            await asyncio.wait(set(self._retiring), timeout=flush_timeout)
        if self.enabled:
            self._save(force=True)  # holds what could not be delivered, to retry after a restart
        await self.flush_state()
        self._started = False

    async def flush_state(self) -> None:
        """Write the state file now if a write is pending (shutdown, tests)."""
        if self._writer is not None:
            await self._writer.flush()

    @property
    def state_writes(self) -> int:
        return self._writer.writes if self._writer is not None else 0

    # -- internals -----------------------------------------------------------------------

    def _reconfigure(self, config: AlertingConfig, probes: list[tuple[str, str]]) -> None:
        now = self._clock()
        old = self.config
        if not config.enabled:
            if old.enabled:
                self._emit(self._engine.resolve_all(now))  # via the old receivers, flushed at stop
                self._log.info("alerting_disabled")
            self.config = config
            self._engine.reconfigure(config, probes, now)
            return
        self.config = config
        resolved = self._engine.reconfigure(config, probes, now)
        if not old.enabled:
            self._engine.started_at = now
        self._emit(resolved)
        if self._dispatcher is None or _delivery(old) != _delivery(config) or not old.enabled:
            self._swap_dispatcher(config, now)
        self._sync_gauge()
        self._save()

    def _swap_dispatcher(self, config: AlertingConfig, now: float) -> None:
        previous = self._dispatcher
        self._dispatcher = self._make_dispatcher(config)
        kept = set(self._dispatcher.receivers)
        if previous is not None:
            for name in set(previous.receivers) - kept:
                for result in RESULTS:
                    with contextlib.suppress(KeyError):
                        self.notifications.remove(name, result)
        self._count_series(self._dispatcher.receivers)
        if self._started and self._loop is not None:
            self._dispatcher.start()
            self._ensure_tick()
            if previous is not None:
                task = self._loop.create_task(previous.close(5.0), name="alert-dispatcher-retire")
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        # New receivers have not seen what is firing: send it now, not a resend interval later.
        self._emit(self._engine.resend_all(now), resend=True)
        self._log.info("alerting_receivers_changed", receivers=self._dispatcher.receivers)

    def _make_dispatcher(self, config: AlertingConfig) -> Dispatcher:
        return Dispatcher(
            config.receivers,
            self._count,
            queue_size=config.queue_size,
            backoff=config.retry_backoff,
            backoff_max=config.retry_backoff_max,
            attempts=config.retry_attempts,
            logger=self._log,
            batch_wait=config.batch_wait,
            outcome=self._outcome,
        )

    def _count(self, receiver: str, result: str) -> None:
        self.notifications.labels(receiver, result).inc()

    def _failed(self) -> None:
        self._errors.failed(self.name)

    def _outcome(self, receiver: str, alerts: list[Alert], delivered: bool) -> None:
        """The dispatcher's report: settle or keep what a receiver owes (resolves above all)."""
        if delivered:
            self._engine.delivered(receiver, alerts)
        else:
            self._engine.delivery_failed(receiver, alerts, self._clock())
            kept = sum(1 for a in alerts if a.resolved)
            if kept:
                self._log.warning(
                    "alert_resolve_kept", receiver=receiver, alerts=kept, retry_in=self.config.resend_interval
                )
        self._save()

    def _count_series(self, receivers: list[str]) -> None:
        for name in receivers:
            for result in RESULTS:
                self.notifications.labels(name, result)

    def _ensure_tick(self) -> None:
        if self._tick is None or self._tick.done():
            loop = self._loop or asyncio.get_running_loop()
            self._tick = loop.create_task(self._ticker(), name="alert-resend-tick")

    def health(self) -> tuple[bool, str]:
        """Whether the engine's tick runs (or alerting is off), and why not: for the push
        heartbeat and the peers' verdict document."""
        if not self.enabled:
            return True, "alerting disabled"
        if not self._started or self._tick is None or self._tick.done():
            return False, "the alert engine's tick is not running"
        age = time.monotonic() - self._last_tick
        if age > 5 * self.tick_seconds + 5:
            return False, f"the alert engine's tick is stale ({age:.1f}s old)"
        return True, "ok"

    async def _ticker(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(self.tick_seconds)
            try:
                now = self._clock()
                self._emit(self._engine.due_resends(now), resend=True)
                retry, expired = self._engine.due_retries(now)
                if retry and self._dispatcher is not None:
                    self._log.info("alert_resolve_retry", alerts=len(retry))
                    self._dispatcher.submit(retry)
                for receiver, alert in expired:
                    self._count(receiver, "dropped")
                    self._log.error(
                        "alert_resolve_given_up",
                        receiver=receiver,
                        alertname=alert.name,
                        target=alert.labels.get("target"),
                        probe=alert.labels.get("probe"),
                        why="not delivered before the state aged out (state_max_age)",
                    )
                if retry or expired:
                    self._save()
            except Exception:  # keep ticking
                self._failed()
                self._log.exception("alert_resend_failed")

    def _emit(self, alerts: list[Alert], resend: bool = False) -> None:
        """Log, queue for the receivers, update the gauge and the state file."""
        for alert in alerts:
            fields = {k: v for k, v in alert.labels.items() if k != "alertname"}
            if resend:
                self._log.debug("alert_resent", alertname=alert.name, **fields)
            elif alert.resolved:
                self._log.info(
                    "alert_resolved",
                    alertname=alert.name,
                    **fields,
                    firing_seconds=round((alert.ends_at or alert.starts_at) - alert.starts_at, 3),
                )
            else:
                self._log.warning(
                    "alert_firing", alertname=alert.name, **fields, description=alert.annotations.get("description")
                )
        if alerts and self._dispatcher is not None:
            self._dispatcher.submit(self.gate.filter(alerts, self._submit_later) if self.gate is not None else alerts)
        if not resend:
            for alert in alerts:  # O(1) per fire or resolve: a wide outage fires thousands
                self._gauge_step(alert)
        self._save()

    def _gauge_step(self, alert: Alert) -> None:
        key = (alert.labels["alertname"], alert.labels["target"], alert.labels["probe"])
        if not alert.resolved:
            self._gauged[key] += 1
        elif self._gauged[key] > 1:
            self._gauged[key] -= 1
        else:
            self._gauged.pop(key, None)
            with contextlib.suppress(KeyError):
                self.alerts_firing.remove(*key)
            return
        self.alerts_firing.labels(*key).set(self._gauged[key])

    def _submit_later(self, alerts: list[Alert]) -> None:
        """Alerts the quorum gate let through after asking the peers."""
        if alerts and self._dispatcher is not None:
            self._dispatcher.submit(alerts)
        self._save()  # the variant sent is persisted: a restart resolves under its name

    def _sync_gauge(self) -> None:
        """Recount from the engine (start, reload): O(firing), not for the probe path."""
        counts = collections.Counter(
            (a.labels["alertname"], a.labels["target"], a.labels["probe"]) for a in self._engine.firing()
        )
        for key in set(self._gauged) - set(counts):
            with contextlib.suppress(KeyError):
                self.alerts_firing.remove(*key)
        for key, value in counts.items():
            self.alerts_firing.labels(*key).set(value)
        self._gauged = counts

    def _load_state(self, now: float) -> list[Alert]:
        path = self.config.state_file
        if path is None:
            return []
        try:
            data = load_state(Path(path))
            if data is None:
                return []
            if self.gate is not None:  # all or nothing too; before the engine's resolves pass through it
                self.gate.restore(data.get(QUORUM_STATE))
            resolved = self._engine.restore(data, now)  # all or nothing: raises before it changes anything
            if self.maintenance is not None:  # drops what it cannot use, never raises
                self.maintenance.restore(data.get("maintenance"))
        except (StateFileError, ValueError, KeyError, TypeError, AttributeError) as exc:
            if self.gate is not None:
                self.gate.restore([])  # the engine starts empty: so does what the gate held
            reason = exc.reason if isinstance(exc, StateFileError) else WRONG_SHAPE
            self.state_file_errors.labels(reason).inc()
            try:
                kept: str | None = str(quarantine(Path(path), self._clock()))
            except OSError as move:
                kept = None
                self._log.error("alert_state_quarantine_failed", path=str(path), error=str(move))
            self._log.error(
                "alert_state_unusable",
                path=str(path),
                reason=reason,
                error=str(exc) if isinstance(exc, StateFileError) else f"{type(exc).__name__}: {exc}",
                moved_to=kept,
                action="starting empty",
            )
            return []
        self._log.info(
            "alert_state_loaded",
            path=str(path),
            firing=len(self._engine.firing()),
            resolved_stale=len(resolved),
            age_seconds=round(now - float(data.get("saved_at", now)), 3),
        )
        return resolved

    def _save(self, force: bool = False) -> None:
        """Ask for a state file write: O(1) here, done off the loop and coalesced."""
        path = self.config.state_file
        if path is None:
            return
        if not force and self._version() == self._saved_version:
            churn_due = self._clock() - self._churn_saved_at >= self.churn_write_interval
            if self._engine.churn == self._saved_churn or not churn_due:
                return
        if self._writer is None or self._writer.path != Path(path):
            self._writer = StateWriter(
                Path(path),
                self._snapshot_steps,
                min_interval=self.state_write_interval,
                on_written=self._written,
                on_error=self._save_failed,
            )
        self._writer.mark()

    def _version(self) -> int:
        """Engine and gate versions only grow, so their sum changes whenever either does."""
        return self._engine.version + (self.gate.version if self.gate is not None else 0)

    def _snapshot(self) -> dict[str, Any]:
        return drain(self._snapshot_steps())

    def _snapshot_steps(self) -> SnapshotSteps[dict[str, Any]]:
        """The state file's content, in slices (the writer runs it on the loop). The
        versions are taken first: a change while the slices run makes the next write."""
        self._snapshot_version = self._version()
        self._snapshot_churn = self._engine.churn
        data = yield from self._engine.snapshot_steps(self._clock())
        if self.gate is not None:
            data[QUORUM_STATE] = yield from self.gate.snapshot_steps()  # the variant each receiver holds
        if self.maintenance is not None:
            data["maintenance"] = self.maintenance.dump()
        return data

    def maintenance_changed(self) -> None:
        """A runtime window was added or ended: write the state file now (loop thread only)."""
        self._save(force=True)

    def _written(self) -> None:
        self._saved_version = self._snapshot_version
        self._saved_churn = self._snapshot_churn
        self._churn_saved_at = self._clock()
        self._save_error = None

    def _save_failed(self, exc: OSError) -> None:
        self._failed()
        self.state_file_errors.labels(WRITE_FAILED).inc()
        message = f"{type(exc).__name__}: {exc}"
        if message != self._save_error:  # once per distinct problem, not once per run
            self._log.error("alert_state_save_failed", path=str(self.config.state_file), error=message)
        self._save_error = message


def _delivery(config: AlertingConfig) -> tuple[Any, ...]:
    """What a dispatcher is built from: a change means new workers and clients."""
    return (
        [r.model_dump() for r in config.receivers],
        config.queue_size,
        config.retry_backoff,
        config.retry_backoff_max,
        config.retry_attempts,
        config.batch_wait,
    )
