"""The per-probe series, kept as plain numbers and exposed as pre-rendered text.

A probe has about a hundred series (every step x reason failure counter exists from
start-up, and three histograms), so at 1,000 probes prometheus-client's
`generate_latest` walks 110,000 samples per scrape: seconds of CPU, holding the GIL
the probes need. Here each probe's lines are cached per family; a change only marks the
families it touched (a bit each), and the next scrape re-renders those (a run touches ~75
lines, ~0.1 ms) and joins the cached text. So a probe running every second costs one
render per scrape (15-30 s), not one per run, and an unchanged probe costs none.

A probe that runs at most as often as Prometheus scrapes (interval >= EAGER_INTERVAL)
would be rendered about once per run either way, so its text is rendered as it runs
instead: the same work, moved off the scrape, which at 1,000 such probes would otherwise
re-render every probe (~0.1 ms each) while Prometheus waits.

The series stay visible to prometheus-client: `ProbeSeriesStore` is a registered
`Collector`, so `generate_latest(registry)` and `registry.get_sample_value` see them,
and a test holds `render()` to `generate_latest`'s exact bytes.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.promtypes import float_to_go
from monitor.results import PHASES, Reason

RESULTS = ("success", "failure")
JOB_EVENTS = ("error", "missed", "skipped")
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# name, type, help: in exposition order.
RUNS = ("synthetic_probe_runs", "counter", "Probe runs by result.")
SUCCESS = ("synthetic_probe_success", "gauge", "1 if the last run passed, else 0.")
DURATION = ("synthetic_probe_duration_seconds", "histogram", "Duration of a whole probe run.")
STEP_DURATION = ("synthetic_probe_step_duration_seconds", "histogram", "Duration of one scenario step, pass or fail.")
STEP_FAILURES = ("synthetic_probe_step_failures", "counter", "Failed steps by reason.")
CONSECUTIVE = ("synthetic_probe_consecutive_failures", "gauge", "Failed runs in a row.")
LAST_SUCCESS = ("synthetic_probe_last_success_timestamp_seconds", "gauge", "Unix time of the last passing run.")
TIMEOUT = ("synthetic_probe_timeout_seconds", "gauge", "The probe's configured deadline.")
JOB = ("synthetic_monitor_job_events", "counter", "Scheduler trouble: a job errored, missed its time, or was skipped.")
LAG = ("synthetic_monitor_schedule_lag_seconds", "histogram", "How late a run started against its schedule.")
STEP_PHASE = (
    "synthetic_probe_step_phase_seconds",
    "gauge",
    "Time of each HTTP phase of a step in the last run (connect, tls, first_byte, body; summed over its requests).",
)
FAMILIES = (
    RUNS,
    SUCCESS,
    DURATION,
    STEP_DURATION,
    STEP_FAILURES,
    CONSECUTIVE,
    LAST_SUCCESS,
    TIMEOUT,
    JOB,
    LAG,
    STEP_PHASE,
)
(
    _RUNS,
    _SUCCESS,
    _DURATION,
    _STEP_DURATION,
    _STEP_FAILURES,
    _CONSECUTIVE,
    _LAST_SUCCESS,
    _TIMEOUT,
    _JOB,
    _LAG,
    _STEP_PHASE,
) = range(11)
_SCALARS = (_SUCCESS, _CONSECUTIVE, _LAST_SUCCESS, _TIMEOUT)
_AFTER_A_RUN = (_RUNS, _SUCCESS, _DURATION, _STEP_DURATION, _CONSECUTIVE, _LAST_SUCCESS, _STEP_PHASE)
_AFTER_A_RUN_BITS = sum(1 << i for i in _AFTER_A_RUN)
_NO_PHASES = (0.0, 0.0, 0.0, 0.0)
EAGER_INTERVAL = 10.0  # seconds: a probe this slow or slower is rendered as it runs


def _go(value: float) -> str:
    """prometheus-client's number format; whole counts below 10**6 take the short path."""
    if value.__class__ is int and 0 <= value < 1_000_000:
        return f"{value}.0"
    return float_to_go(value)


def _go_seconds(value: float) -> str:
    """`_go` for a float of seconds: below 1e6 (and not negative) it is plain `repr`, the
    same text as floatToGoString, at a third of its cost (a run renders 4 per step)."""
    if 0.0 <= value < 1e6:
        return repr(float(value))
    return float_to_go(value)


def _with_inf(bounds: Iterable[float]) -> tuple[float, ...]:
    """Sorted bucket bounds ending in +Inf, as prometheus-client's Histogram keeps them."""
    sorted_bounds = sorted(float(b) for b in bounds)
    if not sorted_bounds or sorted_bounds[-1] != float("inf"):
        sorted_bounds.append(float("inf"))
    return tuple(sorted_bounds)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(**labels: str) -> str:
    """A label set as the exposition writes it: sorted by name, values escaped."""
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))


def _header(name: str, kind: str, help_text: str) -> str:
    shown = name + "_total" if kind == "counter" else name
    help_text = help_text.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {shown} {help_text}\n# TYPE {shown} {kind}\n"


class _Histogram:
    """Counts per bucket (not cumulative) and the sum, with the label prefixes pre-rendered."""

    __slots__ = ("bounds", "counts", "sum", "labels", "_bucket_prefixes", "_count_prefix", "_sum_prefix")

    def __init__(self, name: str, bounds: Sequence[float], labels: dict[str, str]) -> None:
        self.bounds = bounds = _with_inf(bounds)
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.labels = labels
        self._bucket_prefixes = [f"{name}_bucket{{{_labels(le=float_to_go(b), **labels)}}} " for b in bounds]
        plain = _labels(**labels)
        self._count_prefix = f"{name}_count{{{plain}}} "
        self._sum_prefix = f"{name}_sum{{{plain}}} "

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self) -> str:
        out = []
        acc = 0
        for prefix, count in zip(self._bucket_prefixes, self.counts):
            acc += count
            out.append(f"{prefix}{_go(acc)}\n")
        out.append(f"{self._count_prefix}{_go(acc)}\n{self._sum_prefix}{_go(self.sum)}\n")
        return "".join(out)

    def add_to(self, family: HistogramMetricFamily) -> None:
        acc = 0
        buckets = []
        for bound, count in zip(self.bounds, self.counts):
            acc += count
            buckets.append((float_to_go(bound), float(acc)))
        family.add_metric(list(self.labels.values()), buckets, self.sum)


class _Probe:
    """All series of one probe and their rendered text, one string per family."""

    def __init__(
        self,
        target: str,
        probe: str,
        steps: Iterable[str],
        timeout: float,
        buckets: Sequence[float],
        interval: float = 0.0,
    ) -> None:
        self.target, self.probe, self.buckets = target, probe, buckets
        self.eager = interval >= EAGER_INTERVAL
        self.tp = {"target": target, "probe": probe}
        self.runs = [0, 0]
        self.success = 0.0
        self.consecutive = 0.0
        self.last_success = 0.0
        self.timeout = float(timeout)
        self.duration = _Histogram(DURATION[0], buckets, self.tp)
        self.steps: dict[str, _Histogram] = {}
        self.phases: dict[str, tuple[float, ...]] = {}  # step -> the last run's values, in PHASES order
        self._phase_prefixes: dict[str, list[str]] = {}
        self.failures: dict[tuple[str, str], int] = {}
        for step in steps:
            self.add_step(step)
            for reason in Reason:
                self.failures[(step, reason.value)] = 0
        self.jobs = {event: 0 for event in JOB_EVENTS}
        self.lag = _Histogram(LAG[0], LAG_BUCKETS, {"probe": probe})
        self.text = [b""] * len(FAMILIES)  # encoded here, so a scrape only joins
        self.stale = 0  # a bit per family whose text no longer matches its numbers
        self._run_prefixes = [self._prefix(_RUNS, result=r, **self.tp) for r in RESULTS]
        self._scalar_prefixes = {i: self._prefix(i, **self.tp) for i in _SCALARS}
        self._failure_prefixes: dict[tuple[str, str], str] = {}
        for index in range(len(FAMILIES)):
            self.render(index)

    def add_step(self, step: str) -> _Histogram:
        hist = self.steps[step] = _Histogram(STEP_DURATION[0], self.buckets, {**self.tp, "step": step})
        self.phases[step] = _NO_PHASES
        self._phase_prefixes[step] = [self._prefix(_STEP_PHASE, phase=phase, step=step, **self.tp) for phase in PHASES]
        return hist

    def refresh(self) -> None:
        """Re-render the families changed since the last scrape (under the store's lock)."""
        stale, self.stale = self.stale, 0
        index = 0
        while stale:
            if stale & 1:
                self.render(index)
            stale >>= 1
            index += 1

    def render(self, index: int) -> None:
        if index == _RUNS:
            text = "".join(f"{prefix}{_go(n)}\n" for prefix, n in zip(self._run_prefixes, self.runs))
        elif index == _DURATION:
            text = self.duration.lines()
        elif index == _STEP_DURATION:
            text = "".join(hist.lines() for hist in self.steps.values())
        elif index == _STEP_FAILURES:
            prefixes = self._failure_prefixes
            parts = []
            for key, n in self.failures.items():
                prefix = prefixes.get(key)
                if prefix is None:
                    prefix = prefixes[key] = self._prefix(index, reason=key[1], step=key[0], **self.tp)
                parts.append(f"{prefix}{_go(n)}\n")
            text = "".join(parts)
        elif index == _JOB:
            text = "".join(f"{self._prefix(index, event=e, probe=self.probe)}{_go(n)}\n" for e, n in self.jobs.items())
        elif index == _LAG:
            text = self.lag.lines()
        elif index == _STEP_PHASE:
            phase_prefixes = self._phase_prefixes
            parts = []
            for step, values in self.phases.items():
                for prefix, value in zip(phase_prefixes[step], values):
                    parts += (prefix, _go_seconds(value), "\n")
            text = "".join(parts)
        else:
            value = (self.success, self.consecutive, self.last_success, self.timeout)[_SCALARS.index(index)]
            text = f"{self._scalar_prefixes[index]}{_go(value)}\n"
        self.text[index] = text.encode("utf-8")

    @staticmethod
    def _prefix(index: int, **labels: str) -> str:
        name, kind, _ = FAMILIES[index]
        return f"{name}{'_total' if kind == 'counter' else ''}{{{_labels(**labels)}}} "


class ProbeSeriesStore(Collector):
    """Every configured probe's series; mutated by the event loop, read by scrapes."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = _with_inf(buckets)
        self._probes: dict[str, _Probe] = {}
        self._headers = [_header(*family).encode("utf-8") for family in FAMILIES]
        self._lock = threading.Lock()

    # -- changes (event loop) -----------------------------------------------------------
    def add(self, target: str, probe: str, steps: Iterable[str], timeout: float, interval: float = 0.0) -> None:
        entry = _Probe(target, probe, steps, timeout, self.buckets, interval)
        with self._lock:
            self._probes.pop(probe, None)  # a re-added probe moves to the end, as a re-created child would
            self._probes[probe] = entry

    def set_interval(self, probe: str, interval: float) -> None:
        with self._lock:
            p = self._probes.get(probe)
            if p is not None:
                p.eager = interval >= EAGER_INTERVAL

    def remove(self, probe: str) -> None:
        with self._lock:
            self._probes.pop(probe, None)

    def record_run(
        self,
        probe: str,
        ok: bool,
        duration: float,
        finished_at: float,
        steps: Iterable[tuple[str, float, str | None, tuple[float, ...] | None]],
    ) -> None:
        """One run: its result, duration, and each (non-skipped) step's duration, failure
        reason and phase times (None: no request, shown as zeros rather than a stale value)."""
        with self._lock:
            p = self._probes.get(probe)
            if p is None:
                return  # removed by a reload while it ran: its series are gone on purpose
            p.runs[0 if ok else 1] += 1
            p.success = 1.0 if ok else 0.0
            p.duration.observe(duration)
            if ok:
                p.consecutive = 0.0
                p.last_success = finished_at
            else:
                p.consecutive += 1
            failed = False
            for name, seconds, reason, phases in steps:
                hist = p.steps.get(name) or p.add_step(name)
                hist.observe(seconds)
                p.phases[name] = phases or _NO_PHASES
                if reason is not None:
                    p.failures[(name, reason)] = p.failures.get((name, reason), 0) + 1
                    failed = True
            p.stale |= _AFTER_A_RUN_BITS | ((1 << _STEP_FAILURES) if failed else 0)
            if p.eager:
                p.refresh()

    def job_event(self, probe: str, event: str) -> None:
        with self._lock:
            p = self._probes.get(probe)
            if p is not None:
                p.jobs[event] = p.jobs.get(event, 0) + 1
                p.stale |= 1 << _JOB
                if p.eager:
                    p.refresh()

    def observe_lag(self, probe: str, seconds: float) -> None:
        with self._lock:
            p = self._probes.get(probe)
            if p is not None:
                p.lag.observe(max(0.0, seconds))
                p.stale |= 1 << _LAG
                if p.eager:
                    p.refresh()

    # -- reads (scrape thread) ----------------------------------------------------------
    def render(self) -> bytes:
        return b"".join(self.chunks())

    def chunks(self) -> list[bytes]:
        """The exposition text of every family, from the cached per-probe lines (stale ones
        re-rendered first), as pieces in order. The lock is taken per probe, so a run
        recorded meanwhile waits for one probe's render at most, never for the whole scrape."""
        with self._lock:
            probes = list(self._probes.items())
        texts = []
        for name, p in probes:
            with self._lock:
                if self._probes.get(name) is not p:
                    continue  # removed (or re-added) by a reload meanwhile
                if p.stale:
                    p.refresh()
                texts.append(p.text[:])
        out = []
        for index, header in enumerate(self._headers):
            out.append(header)
            out.extend(text[index] for text in texts)
        return out

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            probes = list(self._probes.values())
            runs = CounterMetricFamily(RUNS[0], RUNS[2], labels=["target", "probe", "result"])
            success = GaugeMetricFamily(SUCCESS[0], SUCCESS[2], labels=["target", "probe"])
            duration = HistogramMetricFamily(DURATION[0], DURATION[2], labels=["target", "probe"])
            step_duration = HistogramMetricFamily(
                STEP_DURATION[0], STEP_DURATION[2], labels=["target", "probe", "step"]
            )
            failures = CounterMetricFamily(
                STEP_FAILURES[0], STEP_FAILURES[2], labels=["target", "probe", "step", "reason"]
            )
            consecutive = GaugeMetricFamily(CONSECUTIVE[0], CONSECUTIVE[2], labels=["target", "probe"])
            last_success = GaugeMetricFamily(LAST_SUCCESS[0], LAST_SUCCESS[2], labels=["target", "probe"])
            timeout = GaugeMetricFamily(TIMEOUT[0], TIMEOUT[2], labels=["target", "probe"])
            jobs = CounterMetricFamily(JOB[0], JOB[2], labels=["probe", "event"])
            lag = HistogramMetricFamily(LAG[0], LAG[2], labels=["probe"])
            phase = GaugeMetricFamily(STEP_PHASE[0], STEP_PHASE[2], labels=["target", "probe", "step", "phase"])
            for p in probes:
                tp = [p.target, p.probe]
                for result, n in zip(RESULTS, p.runs):
                    runs.add_metric([*tp, result], n)
                success.add_metric(tp, p.success)
                p.duration.add_to(duration)
                for hist in p.steps.values():
                    hist.add_to(step_duration)
                for (step, reason), n in p.failures.items():
                    failures.add_metric([*tp, step, reason], n)
                consecutive.add_metric(tp, p.consecutive)
                last_success.add_metric(tp, p.last_success)
                timeout.add_metric(tp, p.timeout)
                for event, n in p.jobs.items():
                    jobs.add_metric([p.probe, event], n)
                p.lag.add_to(lag)
                for step, values in p.phases.items():
                    for name, value in zip(PHASES, values):
                        phase.add_metric([*tp, step, name], value)
        return iter(
            [runs, success, duration, step_duration, failures, consecutive, last_success, timeout, jobs, lag, phase]
        )
