"""The continuous probe: a scheduler, a worker pool, the store, and ``/metrics``.

Scheduling. Each target has fixed slots ``start + k × interval`` (``target.interval``
or ``settings.interval``); a run is planned at its slot plus a random offset in
``[0, jitter × interval)``, so runs spread out evenly from the first slot on but
never drift from the grid (control targets' first run is immediate). One
dispatcher coroutine pops due runs from a heap (O(log n) per run, no task per
target, nothing awake between runs) and hands them to a fixed pool of
``settings.concurrency`` workers through a queue. A target still running at its
next slot skips that slot (counted); a daemon that stalled skips missed slots
instead of bursting to catch up. Control targets run first, so that verdicts know
whether the probe's own network works.

Re-tests (:mod:`probe.analysis.retest`). When a regular run's outcome changes (good to bad or back),
the target is measured again ``settings.retests`` times, ``settings.retest_spacing`` seconds
apart, with its reachability checks only, so that the event detector gets the few measurements
it needs within the interval instead of over the next ones. A burst runs in its own task on a
few slots of its own (never a worker a regular run waits for); a re-test starts only if its
whole budget fits before the target's next regular run, and that run cancels what is left.
Re-tests never trigger re-tests. Their records are marked (``test_keys.retest_of``, ``retest``).

Adaptive interval (``settings.adaptive_interval``, :class:`probe.analysis.retest.Pacer`). For a
target without re-tests (``retests: 0``; bursts do the same job when on, except for what a re-test
cannot see: a throttling is paced with re-tests on too), after a regular run,
while the target's last outcome is a blocking or the event detector is unsettled (and twice after a
change back to good), its next regular run comes early (at ``interval / 8``, bounded per change and
by a per-target budget); an early run is a full regular run off the grid (its records marked
``test_keys.early``; the event detector does not count it as a grid run), does not move the grid,
and the grid takes over when the early runs stop.

Results. Every run's records go to the store as soon as the run ends; the run counts as
done (metrics :mod:`probe.service.metrics`, the event detector, the ``measured`` log line)
only once its commit returned (:mod:`probe.service.writer`: one writer thread, group
commit), so a kill -9 loses only runs still in flight, and a full or read-only disk holds
runs in a bounded memory buffer until they are written. Store calls never run on
the event loop: a commit fsyncs (``synchronous=FULL``), and an fsync that takes
seconds on a busy disk would otherwise freeze every worker and fire their timers
(false timeouts, then control checks, then a backlog). ``probe_event_loop_lag_seconds``
shows any stall that remains. Each stage has its own timeout inside the
checks; a run also has an overall budget derived from them, as a safety net.

Signals. SIGHUP reloads the targets file (read and validated in a thread, within the
loader's size and shape limits): an invalid file keeps the running
configuration, logs the error and sets ``probe_config_last_reload_successful`` to 0.
SIGTERM/SIGINT stop scheduling, let in-flight runs finish for up to ``grace``
seconds, cancel the rest, flush the store and return 0.

Logs are one JSON object per line. They name targets, never addresses: exception
text goes through ``failures.scrub``, and a filter on the handler scrubs the probe's own
addresses (probe.service.addresses), which it learns from its interfaces and, at start and
every ``WHOAMI_EVERY`` seconds, from the test helper (its public address).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import importlib
import json
import logging
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from probe.analysis.retest import (
    Pacer,
    Tracker,
    burst_size,
    fit_spacing,
    outcome_of,
    paced_outcome,
    retest_target,
    run_outcome,
)
from probe.analysis.verdict import Controls
from probe.core import config as config_mod
from probe.core import failures
from probe.core.config import Config, ConfigError, Target
from probe.core.context import Context
from probe.core.records import Event, Verdict, mark_early, mark_retest
from probe.service.metrics import MetricsState, registry_for, render
from probe.service.writer import StoreLike, StoreWriter

log = logging.getLogger("probe.service.daemon")

FLUSH_EVERY = 5.0  # seconds between store flushes when idle
LOOP_TICK = 0.25  # seconds between event-loop stall samples
WHOAMI_EVERY = 600.0  # seconds between asking the test helper for our public address
STOP_WRITES = 60.0  # seconds a stop waits for the store writer to write what was handed over
RETEST_MARGIN = 0.25  # seconds a re-test keeps to spare before the next regular run, beyond its expected time
RETEST_FACTOR = 1.25  # a re-test is expected to take this many times the target's last run


class Outcome(Protocol):
    """What a measure function returns (``probe.pipeline.TargetOutcome``)."""

    @property
    def target(self) -> Target: ...

    @property
    def verdict(self) -> Verdict: ...

    def records(self, meta: Any) -> list[dict[str, Any]]: ...


Measure = Callable[[Target, Context, Controls], Awaitable[Outcome]]
Detect = Callable[[Sequence[Mapping[str, Any]]], Iterable[Event]]


# -- Logging ---------------------------------------------------------------------------


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, msg, then the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            data["error"] = failures.scrub(f"{type(exc).__name__}: {exc}")
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """One line for people: local time, level, message, then ``key=value`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items() if v is not None)
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname.lower():7} " \
               f"{record.getMessage()}" + (f"  {fields}" if fields else "")
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line += f"  error={failures.scrub(f'{type(exc).__name__}: {exc}')}"
        return line


def setup_logging(level: int = logging.INFO, stream: Any = None, fmt: str = "json") -> None:
    """Route the ``probe`` loggers to one line per message on stderr (idempotent): JSON, or with
    ``fmt="text"`` readable text (``"auto"``: text on a terminal, JSON otherwise)."""
    root = logging.getLogger("probe")
    for handler in list(root.handlers):
        if getattr(handler, "_probe_json", False):
            root.removeHandler(handler)
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if getattr(stream, "isatty", lambda: False)() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter() if fmt == "text" else JSONFormatter())
    handler._probe_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def _log(level: int, msg: str, **fields: Any) -> None:
    log.log(level, msg, extra={"fields": fields})


def _log_connection(was: bool | None, now: bool | None) -> None:
    """A line in words when the probe's own connection goes down (every control target fails) or back."""
    if now is False and was is not False:
        _log(logging.WARNING, "your connection seems down: every control target failed; verdicts are "
             "inconclusive until one answers again")
    elif now and was is False:
        _log(logging.INFO, "connection back: a control target answers again")


# -- Helpers ----------------------------------------------------------------------------


def load_measure(spec: str | None) -> Measure:
    """``module:function`` (for tests and benchmarks), or the real pipeline."""
    if not spec:
        from probe.pipeline import measure_target

        return measure_target
    module, _, name = spec.partition(":")
    fn: Measure = getattr(importlib.import_module(module), name or "measure_target")
    return fn


def run_budget(target: Target, settings: config_mod.Settings) -> float:
    """An upper bound for one target's run, from the per-stage timeouts (a safety net)."""
    t = settings.timeouts
    budget = 2 * t.dns + 2 * t.connect + 3 * t.tls + 2 * t.http * max(1, len(target.urls)) + 5.0
    if "throughput" in target.checks:
        budget += 4 * (t.throughput + settings.throughput_max_seconds)
    if {"quic", "diagnostics", "circumvention"} & set(target.checks):
        budget += 30.0
    return budget


def default_detector() -> Detect:
    """``probe.analysis.events.RecordDetector``: fed each run's records, returns the events it opened,
    updated or closed."""
    from probe.analysis.events import RecordDetector

    return RecordDetector()  # callable (feed), and asked whether it is unsettled (re-tests)


# -- The scheduler ------------------------------------------------------------------------


@dataclass
class _Job:
    target: Target
    interval: float
    phase: float  # monotonic time of slot 0
    gen: int
    slot: int = 0
    next_at: float = 0.0  # when its next regular run is planned
    took: float = 0.0  # how long its last run (regular or re-test) took: what a re-test needs to fit


@dataclass(frozen=True)
class _Retest:
    of: str  # id of the verdict that changed
    k: int  # 1..settings.retests


@dataclass
class Daemon:
    """One probe daemon; :meth:`run` until :meth:`stop` (or SIGTERM)."""

    config: Config
    ctx: Context
    measure: Measure
    store: StoreLike | None = None
    state: MetricsState = field(default_factory=MetricsState)
    grace: float = 10.0
    detect: Detect | None = None
    rng: random.Random = field(default_factory=random.Random)
    monotonic: Callable[[], float] = time.monotonic
    #: tasks of the layers above, run beside the scheduler until the stop (the fleet's uploader)
    background: Sequence[Callable[[], Awaitable[None]]] = ()
    #: applied to every configuration loaded on a reload (the fleet's control vantage and targets)
    amend: Callable[[Config], Config] | None = None

    def __post_init__(self) -> None:
        self._heap: list[tuple[float, int, str, int, bool]] = []  # (when, seq, target, gen, early)
        self._seq = 0
        self._gen = 0
        self._jobs: dict[str, _Job] = {}
        self._running: set[str] = set()  # names measuring or queued: never twice at once
        self._controls: dict[str, bool | None] = {}
        self._outcomes = Tracker()  # what each target's last decisive run found (re-test on a change)
        self._pacer = Pacer()  # the adaptive interval: early regular runs while a change is undecided
        self._runs = Tracker()  # what each target's last decisive regular run found, throttling included
        self._retests: dict[str, asyncio.Task[None]] = {}  # target -> its burst of re-tests
        self._reloads: set[asyncio.Future[bool]] = set()  # SIGHUP reloads reading the file in a thread
        self._retest_slots: asyncio.Semaphore | None = None
        self._events: dict[str, Event] = {}
        self._queue: asyncio.Queue[tuple[float, _Job, bool]] | None = None  # (planned, job, early)
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._in_flight = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._writer: StoreWriter | None = None

    # -- configuration -------------------------------------------------------------------

    def _interval(self, target: Target) -> float:
        return target.interval or self.config.settings.interval

    def _schedule_new(self, target: Target, now: float, first_delay: float | None = None) -> None:
        self._gen += 1
        interval = self._interval(target)
        if first_delay is None:
            first_delay = 0.0 if target.control else self.rng.uniform(0, self.config.settings.jitter * interval)
        job = _Job(target, interval, phase=now, gen=self._gen)
        self._jobs[target.name] = job
        self._push(now + first_delay, job)

    def _push(self, when: float, job: _Job, early: bool = False) -> None:
        self._seq += 1
        if not early:  # an early run leaves the grid's next run where it is
            job.next_at = when
        heapq.heappush(self._heap, (when, self._seq, job.target.name, job.gen, early))

    def _apply(self, new: Config, now: float) -> None:
        old_targets = {name: job.target for name, job in self._jobs.items()}
        self.config = new
        for target in new.targets:
            job = self._jobs.get(target.name)
            if job is not None and old_targets[target.name] == target and job.interval == self._interval(target):
                continue
            self._schedule_new(target, now)
        names = {t.name for t in new.targets}
        for name in [n for n in self._jobs if n not in names]:
            del self._jobs[name]
        self._controls = {n: v for n, v in self._controls.items() if n in names}
        self._outcomes.retain(names)
        self._runs.retain(names)
        self._pacer.retain(names)
        self.state.set_targets((t.name, t.service, self._interval(t)) for t in new.targets)

    def reload(self) -> bool:
        """Re-read the targets file; keep the running configuration if it is invalid."""
        try:
            new = config_mod.load(self.config.path)
        except ConfigError as exc:
            return self._reload_failed(exc)
        return self._reloaded(new)

    async def reload_off_loop(self) -> bool:
        """:meth:`reload`, reading and validating the file in a thread (up to 1 MiB: ~1 s), so
        that the measurements in flight never see the loop stall (SIGHUP uses this)."""
        try:
            new = await asyncio.to_thread(config_mod.load, self.config.path)
        except ConfigError as exc:
            return self._reload_failed(exc)
        return self._reloaded(new)

    def _on_sighup(self) -> None:
        task = asyncio.ensure_future(self.reload_off_loop())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def _reload_failed(self, exc: ConfigError) -> bool:
        self.state.set_reload(False)
        _log(logging.ERROR, "reload failed, keeping the running configuration", error=str(exc))
        return False

    def _reloaded(self, new: Config) -> bool:
        if self.amend is not None:
            new = self.amend(new)
        old = self.config.settings
        for key in ("concurrency", "listen", "store"):
            if getattr(old, key) != getattr(new.settings, key):
                _log(logging.WARNING, "setting changes need a restart", setting=key)
        self.ctx = dataclasses.replace(self.ctx, settings=new.settings)
        self._apply(new, self.monotonic())
        self.state.set_reload(True)
        _log(logging.INFO, "configuration reloaded", targets=len(new.targets))
        if self._wake is not None:
            self._wake.set()
        return True

    # -- running -------------------------------------------------------------------------

    async def run(self, *, install_signals: bool = True, ready: Callable[[], None] | None = None) -> int:
        """Schedule until stopped; returns the exit code (0)."""
        self.loop = asyncio.get_running_loop()
        from probe.pipeline import prepare

        # heavy optional imports now, not mid-run; and our public address, to scrub (probe.core.privacy)
        await asyncio.gather(prepare(self.config.targets), self._whoami())
        self._queue = asyncio.Queue()
        self._wake, self._stopping, self._idle = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._idle.set()
        self._retest_slots = asyncio.Semaphore(max(1, self.config.settings.concurrency // 4))
        self.state.set_reload(True)
        self._apply(self.config, self.monotonic())
        if self.store is not None:
            self._writer = StoreWriter(self.store, self.state)
            self._writer.start()
        if install_signals:
            self.loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self.stop)
        workers = [asyncio.create_task(self._worker(), name=f"worker-{i}")
                   for i in range(self.config.settings.concurrency)]
        dispatcher = asyncio.create_task(self._dispatch(), name="dispatcher")
        flusher = asyncio.create_task(self._flush_loop(), name="flusher")
        monitor = asyncio.create_task(self._loop_monitor(), name="loop-monitor")
        whoami = asyncio.create_task(self._whoami_loop(), name="whoami")
        extra = [asyncio.ensure_future(make()) for make in self.background]
        _log(logging.INFO, "daemon started", targets=len(self._jobs),
             concurrency=self.config.settings.concurrency)
        if ready is not None:
            ready()
        try:
            await self._stopping.wait()
        finally:
            monitor.cancel()
            whoami.cancel()
            for task in extra:
                task.cancel()
            await asyncio.gather(*extra, return_exceptions=True)
            await self._shutdown(dispatcher, flusher, workers)
            if install_signals:
                for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                    self.loop.remove_signal_handler(sig)
        return 0

    def stop(self) -> None:
        if self._stopping is not None and not self._stopping.is_set():
            _log(logging.INFO, "stopping", in_flight=self._in_flight, grace_seconds=self.grace)
            self._stopping.set()

    async def _shutdown(self, dispatcher: asyncio.Task[None], flusher: asyncio.Task[None],
                        workers: list[asyncio.Task[None]]) -> None:
        dispatcher.cancel()
        flusher.cancel()
        assert self._queue is not None
        assert self._idle is not None
        while not self._queue.empty():  # runs not started yet are dropped
            _, job, _ = self._queue.get_nowait()
            self._running.discard(job.target.name)
        finished = True
        if self._in_flight:
            try:
                async with asyncio.timeout(self.grace):
                    await self._idle.wait()
            except TimeoutError:
                finished = False
        cancelled = self._in_flight
        bursts = list(self._retests.values())
        for task in (*workers, *bursts):
            task.cancel()
        await asyncio.gather(dispatcher, flusher, *workers, *bursts, return_exceptions=True)
        if self._writer is not None:  # every write handed over so far is tried before the close
            budget = max(STOP_WRITES, self.grace)  # a disk that hangs must not hang the stop
            await asyncio.to_thread(self._writer.drain, budget)
            await asyncio.sleep(0)  # the last runs' done callbacks (their events go to the writer too)
            await asyncio.to_thread(self._writer.close, budget)
            self._writer = None
            await asyncio.sleep(0)
        _log(logging.INFO, "daemon stopped", in_flight_finished=finished, cancelled=cancelled)

    async def _dispatch(self) -> None:
        assert self._queue is not None
        assert self._wake is not None
        while True:
            now = self.monotonic()
            while self._heap and self._heap[0][0] <= now:
                planned, _, name, gen, early = heapq.heappop(self._heap)
                job = self._jobs.get(name)
                if job is None or job.gen != gen:
                    continue  # removed or rescheduled by a reload
                if not early:
                    self._plan_next(job, now)
                if name in self._running:
                    if not early:
                        self.state.update_health(_inc_skipped)
                    continue
                self._cancel_retests(name)  # its regular run is due: re-tests never delay or overlap it
                self._running.add(name)
                self._queue.put_nowait((planned, job, early))
            self._set_depth()
            self._wake.clear()
            delay = self._heap[0][0] - self.monotonic() if self._heap else 3600.0
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()

    def _set_depth(self) -> None:
        depth = self._queue.qsize() if self._queue is not None else 0
        self.state.update_health(lambda h: setattr(h, "queue_depth", depth))

    def _plan_next(self, job: _Job, now: float) -> None:
        job.slot += 1
        slot_start = job.phase + job.slot * job.interval
        if slot_start + job.interval <= now:  # stalled: skip whole missed slots
            missed = int((now - slot_start) // job.interval)
            job.slot += missed
            self.state.update_health(lambda h: setattr(h, "skipped", h.skipped + missed))
            slot_start = job.phase + job.slot * job.interval
        self._push(slot_start + self.rng.uniform(0, self.config.settings.jitter * job.interval), job)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            self._flush()

    async def _whoami(self) -> None:
        helper = self.ctx.settings.test_helper
        if helper:
            from probe.checks.control import whoami

            await whoami(helper, self.ctx)

    async def _whoami_loop(self) -> None:
        """Ask the test helper for our public address again now and then: it changes (DHCP, mobile)."""
        while True:
            await asyncio.sleep(WHOAMI_EVERY)
            await self._whoami()

    async def _loop_monitor(self) -> None:
        """Sample how late a timer fires: the time the loop was blocked."""
        while True:
            start = time.perf_counter()
            await asyncio.sleep(LOOP_TICK)
            late = max(0.0, time.perf_counter() - start - LOOP_TICK)
            self.state.update_health(lambda h, late=late: h.loop_lag.observe(late))  # type: ignore[misc]

    def _flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def _network_ok(self) -> bool | None:
        values = list(self._controls.values())
        return any(bool(v) for v in values) if values else None

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            planned, job, early = await self._queue.get()
            self._set_depth()
            lag = max(0.0, self.monotonic() - planned)
            self.state.update_health(lambda h, lag=lag: h.lag.observe(lag))  # type: ignore[misc]
            try:
                await self._run_one(job.target, early=early)
            finally:
                self._running.discard(job.target.name)

    async def _run_one(self, target: Target, retest: _Retest | None = None, early: bool = False) -> None:
        assert self._idle is not None
        self._in_flight += 1
        self._idle.clear()
        self.state.update_health(lambda h: setattr(h, "in_flight", self._in_flight))
        result: str | None = "error"
        try:
            controls = Controls(network_ok=None if target.control else self._network_ok())
            began = self.monotonic()
            async with asyncio.timeout(run_budget(target, self.ctx.settings)):
                outcome = await self.measure(target, self.ctx, controls)
            if (job := self._jobs.get(target.name)) is not None:
                job.took = self.monotonic() - began
            self._handle(outcome, retest, early)
            result = None
        except TimeoutError:
            result = "timeout"
            _log(logging.WARNING, "run exceeded its budget", target=target.name)
        except asyncio.CancelledError:
            result = "error"
            raise
        except Exception:  # noqa: BLE001 - one target's bug must not stop the daemon
            result = "error"
            log.exception("run failed", extra={"fields": {"target": target.name}})
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

            def done(h: Any) -> None:
                h.in_flight = self._in_flight
                if result is not None:  # an ok run counts once its records are committed (_done)
                    h.measurements[result] = h.measurements.get(result, 0) + 1

            self.state.update_health(done)

    def _handle(self, outcome: Outcome, retest: _Retest | None = None, early: bool = False) -> None:
        """Hand a finished run to the store; it counts as done in :meth:`_done`, after the commit."""
        target = outcome.target
        records = outcome.records(self.ctx.meta)
        if retest is not None:
            records = mark_retest(records, retest.of, retest.k)
        elif early:
            records = mark_early(records)
        if target.control:
            was = self._network_ok()
            self._controls[target.name] = outcome.verdict.accessible
            _log_connection(was, self._network_ok())
        if self._writer is None:
            self._done(outcome, records, retest)
        else:
            loop = self.loop
            assert loop is not None

            def committed() -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to tell
                    loop.call_soon_threadsafe(self._done, outcome, records, retest)

            self._writer.submit(records, committed)

    def _done(self, outcome: Outcome, records: list[dict[str, Any]], retest: _Retest | None) -> None:
        target = outcome.target
        self.state.update_health(lambda h: _inc(h.measurements, "ok", 1))
        if target.name in self._jobs:  # not removed by a reload meanwhile
            self.state.observe(records)
        self._detect(records)
        v = outcome.verdict
        _log(logging.INFO, "measured", target=target.name, service=target.service, accessible=v.accessible,
             blocking=v.blocking, rule=v.rule, failure=failures.metric_label(v.failure), checks=len(records) - 1,
             id=v.id, **({"retest": retest.k} if retest is not None else {}))
        changed = self._outcomes.observe(target.name, outcome_of(v.blocking), retest=retest is not None)
        if retest is not None:
            return
        retesting = bool(self.config.settings.retests) and retest_target(target) is not None
        run_changed = self._runs.observe(target.name, paced_outcome(run_outcome(v.blocking), retesting))
        if retesting and (changed or self._unsettled(target.name)):
            self._start_retests(target, v.id, changed)
            return
        # no burst: the adaptive interval (with re-tests on, for what they cannot see: throttling)
        seen = False if retesting else None
        self._run_early(target, run_changed, self._runs.last(target.name) != "ok", self._unsettled(target.name, seen),
                        self._ask("ongoing", target.name, seen))

    def _run_early(self, target: Target, changed: bool, blocked: bool, unsettled: bool, ongoing: bool) -> None:
        """The adaptive interval: bring the target's next regular run forward while a change is undecided."""
        job = self._jobs.get(target.name)
        if job is None or target.control or not self.config.settings.adaptive_interval or self._stopping is None \
                or self._stopping.is_set():
            return
        when = self._pacer.early(target.name, self.monotonic(), interval=job.interval, took=job.took,
                                 next_regular=job.next_at, changed=changed, blocked=blocked, unsettled=unsettled,
                                 ongoing=ongoing)
        if when is not None:
            self._push(when, job, early=True)
            if self._wake is not None:
                self._wake.set()

    def _unsettled(self, name: str, seen: bool | None = True) -> bool:
        """Whether the detector would decide an end sooner with more measurements now, in the target's
        series that a re-test sees (``seen`` True), does not see (False), or any (None)."""
        return self._ask("unsettled", name, seen)

    def _ask(self, question: str, name: str, seen: bool | None) -> bool:
        """The event detector's ``unsettled`` or ``ongoing`` (probe.analysis.events.RecordDetector);
        False for a detector without it."""
        answer = getattr(self.detect, question, None)
        return bool(answer(name, seen)) if callable(answer) else False

    # -- re-tests on a verdict change (probe.analysis.retest) ------------------------------------------

    def _start_retests(self, target: Target, of: str, changed: bool) -> None:
        """A regular run's outcome changed (or left the detector unsettled): measure the target again,
        a few times, before its next run."""
        job = self._jobs.get(target.name)
        retarget = retest_target(target)
        settings = self.config.settings
        if job is None or retarget is None or settings.retests == 0 or self._stopping is None \
                or self._stopping.is_set():
            return
        self._cancel_retests(target.name)
        task = asyncio.create_task(
            self._retest_burst(job, retarget, of, burst_size(settings.retests, changed), settings.retest_spacing,
                               "verdict changed" if changed else "event detector unsettled"),
            name=f"retest-{target.name}")
        self._retests[target.name] = task

        def forget(done: asyncio.Task[None], name: str = target.name) -> None:
            if self._retests.get(name) is done:
                del self._retests[name]

        task.add_done_callback(forget)

    def _cancel_retests(self, name: str) -> None:
        task = self._retests.pop(name, None)
        if task is not None:
            task.cancel()

    async def _retest_burst(self, job: _Job, target: Target, of: str, count: int, spacing: float,
                            why: str = "verdict changed") -> None:
        """Re-test k starts ``spacing`` after the previous run ended (closer on a short interval:
        :func:`probe.analysis.retest.fit_spacing`), on one of a few re-test slots (never a worker a
        regular run waits for), and only if it should end before the target's next regular run (its
        last run's time × 1.25 + 0.25 s, capped by its budget); the rest of the burst is dropped otherwise.
        Logged once, when the first re-test starts."""
        assert self._stopping is not None
        assert self._retest_slots is not None
        done = 0
        spacing = fit_spacing(count, spacing, job.next_at - self.monotonic() - self._retest_needs(job, target))
        try:
            for k in range(1, count + 1):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(spacing):
                        await self._stopping.wait()
                async with self._retest_slots:
                    fits = self.monotonic() + self._retest_needs(job, target) <= job.next_at
                    if self._stopping.is_set() or self._jobs.get(job.target.name) is not job or not fits:
                        return
                    if k == 1:
                        _log(logging.INFO, f"{why}, re-testing", target=target.name, retests=count,
                             spacing=round(spacing, 3))
                    await self._run_one(target, _Retest(of, k))
                done = k
                self.state.update_health(lambda h: _inc(h.retests, "run", 1))
        finally:
            self.state.update_health(lambda h: _inc(h.retests, "dropped", count - done))

    def _retest_needs(self, job: _Job, target: Target) -> float:
        """Seconds a re-test should have before the next regular run: about the target's last run (a
        blocked run's time is its timeouts: the same again), with room to spare."""
        return min(run_budget(target, self.ctx.settings), RETEST_FACTOR * job.took + RETEST_MARGIN)

    def _detect(self, records: Sequence[Mapping[str, Any]]) -> None:
        if self.detect is None:
            return
        try:
            changed = list(self.detect(records))
        except Exception:  # noqa: BLE001 - detection is optional; measuring goes on
            log.exception("event detection failed", extra={"fields": {}})
            return
        if not changed:
            return
        for event in changed:  # logged once when it opens and once when it ends, not at every update
            fields = {"target": event.target, "type": event.type, "check": event.check,
                      "confidence": event.confidence, "event": event.id}
            if event.id not in self._events:
                _log(logging.WARNING, "event started", **fields, start=event.start_time)
            if not event.ongoing:
                _log(logging.INFO, "event ended", **fields, end=event.end_time)
            self._events[event.id] = event
        if self._writer is not None:
            self._writer.save_events(changed)
        self.state.set_events(self._events.values())
        self._events = {k: e for k, e in self._events.items() if e.ongoing}

    # -- /probe -------------------------------------------------------------------------

    async def probe_target(self, name: str, limit: float | None = None) -> bytes:
        """Measure one target now, for ``/probe``: its metrics in a fresh registry.

        ``limit`` bounds the run (else the target's own run budget). A run that runs out of time
        answers ``probe_success 0`` and stores nothing, as blackbox_exporter does: a measurement
        cut short is never turned into a verdict. Raises KeyError for an unknown target.
        """
        target = next((t for t in self.config.targets if t.name == name), None)
        if target is None:
            raise KeyError(name)
        budget = run_budget(target, self.ctx.settings) if limit is None else limit
        state = MetricsState()
        start = time.perf_counter()
        success = 0.0
        try:
            if budget <= 0:  # the request spent its time waiting for a slot
                raise TimeoutError
            async with asyncio.timeout(budget):
                outcome = await self.measure(target, self.ctx, Controls(network_ok=self._network_ok()))
            state.observe(outcome.records(self.ctx.meta))
            success = 1.0 if outcome.verdict.accessible else 0.0
        except TimeoutError:
            log.warning("on-demand probe ran out of time", extra={"fields": {"target": name, "seconds": budget}})
        except Exception:  # noqa: BLE001 - reported as probe_success 0, like blackbox_exporter
            log.exception("on-demand probe failed", extra={"fields": {"target": name}})
        registry = registry_for(state, daemon=False, process=False, info=False)
        registry.register(_ProbeSummary(success, time.perf_counter() - start))
        return render(state, registry=registry)


def _inc_skipped(h: Any) -> None:
    h.skipped += 1


def _inc(counts: dict[str, int], result: str, n: int) -> None:
    counts[result] = counts.get(result, 0) + n


class _ProbeSummary(Collector):
    """blackbox_exporter's two headline series for a /probe answer."""

    def __init__(self, success: float, duration: float) -> None:
        self.success, self.duration = success, duration

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("probe_success", "1 if the target was accessible.", value=self.success)
        yield GaugeMetricFamily("probe_duration_seconds", "How long the on-demand probe took.", value=self.duration)
