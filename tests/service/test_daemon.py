"""The daemon: scheduling, limits, budgets, store writes, reload, shutdown, logs, /metrics and /probe.

In-process tests drive :class:`probe.service.daemon.Daemon` with a fake measure function
(:func:`fake_measure`, which builds real records); the last tests run the real
``python -m probe daemon`` in a subprocess and send it real SIGHUP and SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from probe.analysis.retest import Adaptive
from probe.analysis.verdict import Controls
from probe.core.config import Target, load, load_text
from probe.core.context import Context
from probe.core.records import CheckResult, Event, ProbeMeta, Verdict, parse_time, verdict_record
from probe.pipeline import TargetOutcome
from probe.service import daemon as daemon_mod
from probe.service import endpoints as endpoints_mod
from probe.service.endpoints import Endpoints
from probe.service.metrics import EventKey, render
from probe.storage.store import Store

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FakeDetails:
    address: str
    port: int


STATS: dict[str, Any] = {"active": 0, "max_active": 0, "calls": []}


async def fake_measure(target: Target, ctx: Context, controls: Controls) -> TargetOutcome:
    """Realistic records without a network: ``options.fake`` picks ok/blocked/error, ``options.delay`` a wait."""
    mode = str(target.options.get("fake", "ok"))
    delay = float(target.options.get("delay", 0.0))
    STATS["calls"].append((target.name, time.monotonic(), controls.network_ok))
    STATS["active"] += 1
    STATS["max_active"] = max(STATS["max_active"], STATS["active"])
    try:
        await asyncio.sleep(delay)
    finally:
        STATS["active"] -= 1
    if mode == "error":
        raise RuntimeError("boom at 203.0.113.7")
    start = ctx.clock()
    ok = mode != "blocked"
    tcp = CheckResult(
        check="tcp", target=target.name, input="127.0.0.1:443", ok=ok,
        failure=None if ok else "connection_reset", failed_operation=None if ok else "connect",
        start_time=start, runtime=0.01, details=FakeDetails("127.0.0.1", 443), timings={"connect": 0.01},
    )
    verdict = Verdict(
        target=target.name, service=target.service, category=target.category, accessible=ok,
        blocking=False if ok else "tcp_ip", rule="accessible" if ok else "tcp_blocked", reason="fake",
        start_time=start, evidence=(tcp.id,), failure=tcp.failure,
    )
    return TargetOutcome(target, (tcp,), verdict)


@pytest.fixture(autouse=True)
def _reset_stats() -> None:
    STATS.update(active=0, max_active=0, calls=[])


def targets_yaml(names: list[str], *, interval: float = 1.0, concurrency: int = 8, jitter: float = 0.0,
                 extra: str = "", control: bool = False, settings: str = "") -> str:
    lines = [f"settings: {{interval: {interval}, jitter: {jitter}, concurrency: {concurrency}{settings}}}", "targets:"]
    if control:
        lines.append("  - {name: ctl, service: control, category: control, addresses: [127.0.0.1], checks: [tcp]}")
    for n in names:
        lines.append(f"  - {{name: {n}, service: svc, category: messaging, addresses: [127.0.0.1], "
                     f"checks: [tcp]{extra}}}")
    return "\n".join(lines) + "\n"


class ListStore:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.events: list[Event] = []
        self.closed = False
        self.fail = False

    def append(self, records: Any) -> None:
        if self.fail:
            raise OSError("disk full")
        self.records.extend(records)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def save_events(self, events: Any) -> None:
        self.events.extend(events)


def make_daemon(text: str, path: Path | None = None, **kw: Any) -> daemon_mod.Daemon:
    if path is not None:
        path.write_text(text)
        cfg = load(path)
    else:
        cfg = load_text(text)
    ctx = Context(settings=cfg.settings, meta=ProbeMeta(probe_id="probe-test"))
    kw.setdefault("measure", fake_measure)
    return daemon_mod.Daemon(cfg, ctx, store=kw.pop("store", ListStore()), **kw)


async def run_for(d: daemon_mod.Daemon, seconds: float) -> int:
    task = asyncio.create_task(d.run(install_signals=False))
    await asyncio.sleep(seconds)
    d.stop()
    return await asyncio.wait_for(task, 15)


async def test_runs_each_target_on_its_interval_and_stores_records() -> None:
    d = make_daemon(targets_yaml(["a", "b"], interval=1.0))
    assert await run_for(d, 2.5) == 0
    counts = {n: sum(1 for c in STATS["calls"] if c[0] == n) for n in ("a", "b")}
    assert counts == {"a": 3, "b": 3}  # t = 0, 1, 2
    store = d.store
    assert isinstance(store, ListStore) and store.closed
    assert {r["target"] for r in store.records} == {"a", "b"}
    assert sum(1 for r in store.records if r["record_type"] == "verdict") == 6
    starts = [t for n, t, _ in STATS["calls"] if n == "a"]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(0.9 < g < 1.1 for g in gaps), gaps


async def test_jitter_stays_within_its_window_and_does_not_drift() -> None:
    d = make_daemon(targets_yaml(["a"], interval=1.0, jitter=0.3))
    t0 = time.monotonic()
    await run_for(d, 3.6)
    starts = [t - t0 for n, t, _ in STATS["calls"] if n == "a"]
    assert len(starts) == 3 or len(starts) == 4
    for k, s in enumerate(starts):
        # slot k begins at phase + k (phase itself within [0, 0.3)); offset within [0, 0.3)
        assert k - 0.05 <= s <= k + 0.65, (k, s)


async def test_global_concurrency_limit_is_respected() -> None:
    names = [f"t{i}" for i in range(20)]
    d = make_daemon(targets_yaml(names, interval=10, concurrency=3, extra=", options: {delay: 0.2}"))
    await run_for(d, 1.6)
    assert STATS["max_active"] == 3
    assert len({c[0] for c in STATS["calls"]}) == 20  # all ran, three at a time


async def test_a_target_still_running_skips_its_slot() -> None:
    d = make_daemon(targets_yaml(["slow"], interval=1.0, extra=", options: {delay: 1.5}"))
    await run_for(d, 2.2)
    assert len(STATS["calls"]) == 2  # t=0 (until 1.5), skip t=1, t=2
    assert d.state.health.skipped >= 1


async def test_errors_and_store_failures_are_counted_and_do_not_stop_the_daemon() -> None:
    store = ListStore()
    store.fail = True
    d = make_daemon(targets_yaml(["ok"], interval=1.0) + "  - {name: bad, service: svc, category: x, "
                    "addresses: [127.0.0.1], checks: [tcp], options: {fake: error}}\n", store=store)
    await run_for(d, 1.2)
    h = d.state.health
    assert h.measurements["error"] >= 2
    assert sum(h.store_write_errors.values()) >= 2
    # a run counts as done only once its records are committed: records the store refused are lost, counted
    assert h.measurements["ok"] == 0 and h.store_dropped_by["error"] >= 4 and "ok" not in d.state.targets


async def test_run_budget_times_out_a_hung_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_mod, "run_budget", lambda target, settings: 0.2)
    d = make_daemon(targets_yaml(["hung"], interval=10, extra=", options: {delay: 30}"))
    await run_for(d, 0.6)
    assert d.state.health.measurements["timeout"] == 1
    assert STATS["active"] == 0


async def test_controls_run_first_and_feed_network_ok() -> None:
    d = make_daemon(targets_yaml(["a"], interval=1.0, jitter=0.5, control=True))
    await run_for(d, 2.2)
    assert STATS["calls"][0][0] == "ctl" and STATS["calls"][0][2] is None
    later = [ok for n, t, ok in STATS["calls"] if n == "a"]
    assert later and later[-1] is True


async def test_stop_lets_in_flight_finish_within_grace() -> None:
    d = make_daemon(targets_yaml(["a"], interval=10, extra=", options: {delay: 0.5}"), grace=5)
    task = asyncio.create_task(d.run(install_signals=False))
    await asyncio.sleep(0.1)
    d.stop()
    await asyncio.wait_for(task, 5)
    store = d.store
    assert isinstance(store, ListStore)
    assert any(r["record_type"] == "verdict" for r in store.records)  # it finished and was stored
    assert d.state.health.measurements["ok"] == 1


async def test_stop_cancels_in_flight_after_grace() -> None:
    d = make_daemon(targets_yaml(["a"], interval=10, extra=", options: {delay: 30}"), grace=0.3)
    task = asyncio.create_task(d.run(install_signals=False))
    await asyncio.sleep(0.1)
    t0 = time.monotonic()
    d.stop()
    assert await asyncio.wait_for(task, 5) == 0
    assert time.monotonic() - t0 < 2
    assert STATS["active"] == 0
    assert isinstance(d.store, ListStore) and d.store.closed


async def test_reload_adds_removes_and_keeps_old_config_when_invalid(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    d = make_daemon(targets_yaml(["a", "b"], interval=1.0), path=path)
    task = asyncio.create_task(d.run(install_signals=False))
    try:
        await asyncio.sleep(0.3)
        assert set(d.state.targets) == {"a", "b"}
        path.write_text(targets_yaml(["b", "c"], interval=1.0))
        assert d.reload()
        await asyncio.sleep(0.7)
        assert set(d.state.targets) == {"b", "c"}  # a's series are gone
        assert d.state.health.reload_ok and d.state.health.targets == 2
        path.write_text("targets: [{name: broken}]\n")
        assert not d.reload()
        assert d.state.health.reload_ok is False
        n = len(STATS["calls"])
        await asyncio.sleep(1.2)
        assert {c[0] for c in STATS["calls"][n:]} == {"b", "c"}  # the old configuration keeps running
    finally:
        d.stop()
        await asyncio.wait_for(task, 5)


async def test_detector_events_reach_metrics_and_store() -> None:
    seen: list[int] = []

    def detect(records: Any) -> list[Event]:
        seen.append(len(records))
        r = records[-1]
        if r["test_keys"]["blocking"]:
            return [Event("ev1", "probe-test", r["target"], r["service"], "tcp", "tcp_ip", 100.0, 90.0, 100.0,
                          None, None, None, 0.9)]
        return []

    d = make_daemon(targets_yaml(["blk"], interval=10, extra=", options: {fake: blocked}"), detect=detect)
    await run_for(d, 0.3)
    assert seen == [2]
    assert isinstance(d.store, ListStore) and [e.id for e in d.store.events] == ["ev1"]
    assert list(d.state.events) == [EventKey("blk", "svc", "tcp_ip")]


# -- Re-tests on a verdict change --------------------------------------------------------------

RUNS: list[tuple[str, float, tuple[str, ...]]] = []  # (target, monotonic start, checks measured)


async def turning_bad(target: Target, ctx: Context, controls: Controls) -> TargetOutcome:
    """:func:`fake_measure`, accessible at the first run and blocked from then on; notes which checks
    each run measured."""
    RUNS.append((target.name, time.monotonic(), target.checks))
    mode = "ok" if len(RUNS) == 1 else "blocked"
    return await fake_measure(replace(target, options={"fake": mode}), ctx, controls)


class TimedStore(ListStore):
    """Notes when each event was saved."""

    def __init__(self) -> None:
        super().__init__()
        self.saved_at: list[tuple[float, Event]] = []

    def save_events(self, events: Any) -> None:
        self.saved_at += [(time.monotonic(), e) for e in events]
        super().save_events(events)


@pytest.fixture
def retest_world(monkeypatch: pytest.MonkeyPatch) -> None:
    RUNS.clear()
    monkeypatch.setattr(daemon_mod, "run_budget", lambda target, settings: 0.3)


def retest_yaml(interval: float, retests: int, spacing: float) -> str:
    """One target with a throughput check: its regular runs measure it, its re-tests do not."""
    return targets_yaml([], interval=interval, settings=f", retests: {retests}, retest_spacing: {spacing}") + (
        "  - {name: t, service: svc, category: messaging, addresses: [127.0.0.1], checks: [tcp, throughput]}\n")


async def run_turning_bad(d: daemon_mod.Daemon, seconds: float) -> tuple[list[float], list[float]]:
    """Run the daemon (measuring with :func:`turning_bad`) for ``seconds`` after it is ready. Returns
    the regular runs' and the re-tests' start times, from the first run."""
    ready = asyncio.Event()
    task = asyncio.create_task(d.run(install_signals=False, ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await asyncio.sleep(seconds)
    finally:
        d.stop()
        await asyncio.wait_for(task, 5)
    t0 = RUNS[0][1]
    regular = [t - t0 for _, t, checks in RUNS if "throughput" in checks]
    retests = [t - t0 for _, t, checks in RUNS if "throughput" not in checks]
    return regular, retests


@pytest.mark.usefixtures("retest_world")
async def test_a_target_turning_bad_is_retested_and_its_event_starts_within_the_interval() -> None:
    store = TimedStore()
    d = make_daemon(retest_yaml(1.0, 4, 0.1), measure=turning_bad, store=store,
                    detect=daemon_mod.default_detector())
    regular, retests = await run_turning_bad(d, 2.5)
    assert regular == pytest.approx([0, 1, 2], abs=0.1) and d.state.health.skipped == 0  # on time
    # four re-tests of the reachability checks only, spaced, all inside the interval of the change
    assert [c for _, _, c in RUNS if "throughput" not in c] == [("tcp",)] * 4
    assert all(1.0 < t < 2.0 for t in retests) and all(b - a >= 0.1 for a, b in zip(retests, retests[1:], strict=False))
    assert d.state.health.retests == {"run": 4, "dropped": 0}
    assert 'probe_retests_total{result="run"} 4.0' in render(d.state).decode()
    # stored and marked: every record of a re-test names the verdict that changed and its number
    verdicts = [r for r in store.records if r["record_type"] == "verdict"]
    changed = verdicts[1]
    assert changed["test_keys"]["blocking"] == "tcp_ip" and "retest_of" not in changed["test_keys"]
    marked = [r for r in store.records if r["test_keys"].get("retest_of") == changed["id"]]
    assert sorted(r["test_keys"]["retest"] for r in marked if r["record_type"] == "verdict") == [1, 2, 3, 4]
    assert len(marked) == 8  # a check and a verdict each
    assert "retest_of" not in verdicts[-1]["test_keys"]  # the third regular run (no change: no re-tests)
    # the event is active before the next regular run, and starts at the regular run that saw the change
    first_saved, event = store.saved_at[0]
    assert event.ongoing and event.type == "tcp_ip" and first_saved - RUNS[0][1] < 2.0
    assert event.start_high == pytest.approx(parse_time(changed["measurement_start_time"]))
    assert event.evidence[0] == changed["id"] and set(event.evidence[1:]) <= {r["id"] for r in marked}


async def slow_turning_bad(target: Target, ctx: Context, controls: Controls) -> TargetOutcome:
    """:func:`turning_bad`, each run taking 0.2 s."""
    outcome = await turning_bad(target, ctx, controls)
    await asyncio.sleep(0.2)
    return outcome


@pytest.mark.usefixtures("retest_world")
async def test_retests_that_would_not_finish_before_the_next_run_are_dropped() -> None:
    # Runs take 0.2 s: a re-test starts only with 1.25 × that (+ the margin, at most the run's budget)
    # to spare before the next run at 2 s, so after the change at 1 s the later re-tests cannot run.
    d = make_daemon(retest_yaml(1.0, 4, 0.2), measure=slow_turning_bad)
    regular, retests = await run_turning_bad(d, 2.5)
    assert regular == pytest.approx([0, 1, 2], abs=0.1) and d.state.health.skipped == 0
    h = d.state.health.retests
    assert h["run"] >= 1 and h["dropped"] >= 1 and h["run"] + h["dropped"] == 4 == len(retests) + h["dropped"]
    needs = min(0.3, daemon_mod.RETEST_FACTOR * 0.2 + daemon_mod.RETEST_MARGIN)  # the budget (0.3 s) caps it
    assert all(1.0 < t <= regular[2] - needs + 0.05 for t in retests), (regular, retests)  # time to spare


@pytest.mark.usefixtures("retest_world")
async def test_a_burst_fits_a_short_interval() -> None:
    """4 re-tests 15 s apart cannot fit a 1 s interval: they are spaced to fit it, not dropped (at a
    20 s interval the daemon logged 're-testing, retests: 4' and ran none)."""
    text = targets_yaml([], interval=1.0) + (  # the default re-tests (4, 15 s apart): 60 s
        "  - {name: t, service: svc, category: messaging, addresses: [127.0.0.1], checks: [tcp, throughput]}\n")
    d = make_daemon(text, measure=turning_bad)
    regular, retests = await run_turning_bad(d, 2.5)
    assert regular == pytest.approx([0, 1, 2], abs=0.1)
    assert len(retests) == 4 and all(1.0 < t < 2.0 for t in retests)
    assert d.state.health.retests == {"run": 4, "dropped": 0}


@pytest.mark.usefixtures("retest_world")
@pytest.mark.parametrize("adaptive", [True, False])
async def test_without_retests_a_change_brings_the_next_regular_runs_sooner_then_back_to_the_grid(
        adaptive: bool) -> None:
    """The adaptive interval (retests: 0): after the change at 2 s the next regular runs (full runs, the
    throughput check too) come every max(interval / 8, 1.25 x run + 0.25 s) = 0.25 s, at most
    Adaptive.onset (4) of them; the grid (0, 2, 4 s) does not move, and nothing changes while nothing
    changes (no early run after the first, good run, and none after the 4 s run: the count is spent)."""
    text = targets_yaml([], interval=2.0, settings=f", retests: 0, adaptive_interval: {str(adaptive).lower()}") + (
        "  - {name: t, service: svc, category: messaging, addresses: [127.0.0.1], checks: [tcp, throughput]}\n")
    d = make_daemon(text, measure=turning_bad)
    regular, retests = await run_turning_bad(d, 4.6)
    assert retests == []  # every run is a regular one
    grid = [t for t in regular if abs(t - round(t / 2.0) * 2.0) < 0.1]
    early = [t for t in regular if t not in grid]
    assert grid == pytest.approx([0, 2, 4], abs=0.1) and d.state.health.skipped == 0
    if not adaptive:
        assert early == []
        return
    assert len(early) == Adaptive().onset
    assert all(2.0 < t < 3.5 for t in early), early
    gaps = [b - a for a, b in zip([grid[1], *early], early, strict=False)]
    assert all(0.24 <= g < 0.5 for g in gaps), gaps


async def turning_throttled(target: Target, ctx: Context, controls: Controls) -> TargetOutcome:
    """:func:`turning_bad`, but the blocking is throttling (what a re-test cannot see: no throughput check)."""
    outcome = await turning_bad(target, ctx, controls)
    if outcome.verdict.accessible:
        return outcome
    ok = await fake_measure(target, ctx, controls)
    return replace(ok, verdict=replace(ok.verdict, accessible=False, blocking="throttling", rule="throttled"))


@pytest.mark.usefixtures("retest_world")
async def test_with_retests_a_throttling_change_brings_full_runs_sooner() -> None:
    """Re-tests on, but the change is a throttling, which a re-test cannot see: no burst; the adaptive
    interval brings the next regular runs (full runs, the throughput check too) forward instead, until the
    event starts (then its onset is decided), before the next slot."""
    text = targets_yaml([], interval=2.0, settings=", retests: 4, retest_spacing: 0.1") + (
        "  - {name: t, service: svc, category: messaging, addresses: [127.0.0.1], checks: [tcp, throughput]}\n")
    store = TimedStore()
    d = make_daemon(text, measure=turning_throttled, store=store, detect=daemon_mod.default_detector())
    regular, retests = await run_turning_bad(d, 4.6)
    assert retests == [] and d.state.health.retests.get("run", 0) == 0
    grid = [t for t in regular if abs(t - round(t / 2.0) * 2.0) < 0.1]
    early = [t for t in regular if t not in grid]
    assert grid == pytest.approx([0, 2, 4], abs=0.1)
    assert 2 <= len(early) <= Adaptive().onset and all(2.0 < t < 3.5 for t in early), early
    first_saved, event = store.saved_at[0]
    assert event.type == "throttling" and event.ongoing and first_saved - RUNS[0][1] < 3.5


@contextlib.contextmanager
def daemon_log() -> Iterator[list[dict[str, Any]]]:
    """The daemon's JSON log lines while the block runs, parsed."""
    stream, lines = io.StringIO(), []
    daemon_mod.setup_logging(logging.INFO, stream)
    try:
        yield lines
    finally:
        daemon_mod.setup_logging(logging.WARNING, sys.stderr)
        lines += [json.loads(line) for line in stream.getvalue().splitlines()]


def test_an_event_is_logged_once_when_it_opens_and_once_when_it_ends() -> None:
    """'event started' was logged again at every run while the event was open."""
    d = make_daemon(targets_yaml(["tg"], interval=10), detect=daemon_mod.default_detector())
    meta, t0 = ProbeMeta(probe_id="p1"), 1_790_000_000.0
    with daemon_log() as lines:
        for i, blocking in enumerate([False] * 20 + ["tcp_ip"] * 12 + [False] * 30):
            v = Verdict("tg", "svc", "messaging", blocking is False, blocking, "r", "x", t0 + i * 300.0)
            d._detect([verdict_record(v, meta)])
    said = [x for x in lines if x["msg"].startswith("event")]
    assert [x["msg"] for x in said] == ["event started", "event ended"]
    assert said[0]["event"] == said[1]["event"] and said[1]["end"] is not None


@pytest.mark.usefixtures("retest_world")
async def test_retesting_is_logged_only_when_a_retest_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """'verdict changed, re-testing, retests: 4' was logged when no re-test fitted before the next run."""
    monkeypatch.setattr(daemon_mod, "run_budget", lambda target, settings: 0.9)

    async def slower(target: Target, ctx: Context, controls: Controls) -> TargetOutcome:
        outcome = await turning_bad(target, ctx, controls)
        await asyncio.sleep(0.45)  # a re-test needs 0.9 s before the next run: none fits after 1.45 s
        return outcome

    d = make_daemon(retest_yaml(1.0, 4, 0.1), measure=slower)
    with daemon_log() as lines:
        _, retests = await run_turning_bad(d, 1.8)
    assert retests == [] and d.state.health.retests == {"run": 0, "dropped": 4}
    assert not [x for x in lines if "re-testing" in x["msg"]]
    d = make_daemon(retest_yaml(1.0, 4, 0.1), measure=turning_bad)
    RUNS.clear()
    with daemon_log() as lines:
        _, retests = await run_turning_bad(d, 1.5)
    said = [x for x in lines if "re-testing" in x["msg"]]
    assert len(retests) == 4 and len(said) == 1 and said[0]["msg"] == "verdict changed, re-testing"


def test_json_logs_are_one_line_and_scrub_addresses() -> None:
    stream = io.StringIO()
    daemon_mod.setup_logging(logging.INFO, stream)
    try:
        try:
            raise RuntimeError("connect to 198.51.100.23 failed\nsecond line")
        except RuntimeError:
            daemon_mod.log.exception("run failed", extra={"fields": {"target": "x"}})
        daemon_mod._log(logging.INFO, "measured", target="x", blocking=False)
    finally:
        daemon_mod.setup_logging(logging.WARNING, sys.stderr)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["target"] == "x" and "198.51.100.23" not in lines[0] and "[scrubbed]" in first["error"]
    assert second["msg"] == "measured" and second["blocking"] is False and second["level"] == "info"


@contextlib.asynccontextmanager
async def serving(d: daemon_mod.Daemon) -> AsyncIterator[int]:
    """The daemon running, with its HTTP endpoints on a free port of its loop."""
    endpoints = Endpoints(d, "127.0.0.1:0")
    task = asyncio.create_task(endpoints.serve(d.run(install_signals=False)))
    try:
        await asyncio.sleep(0.3)
        yield endpoints.port
    finally:
        d.stop()
        await asyncio.wait_for(task, 10)
        endpoints.close()


async def test_metrics_and_probe_endpoints_over_http() -> None:
    d = make_daemon(targets_yaml(["a"], interval=10) + "  - {name: blk, service: svc, category: x, "
                    "addresses: [127.0.0.1], checks: [tcp], options: {fake: blocked}}\n")
    async with serving(d) as port:

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        status, text = await asyncio.to_thread(get, "/metrics")
        assert status == 200
        assert 'probe_blocking{service="svc",target="blk",type="tcp_ip"} 1.0' in text
        assert 'probe_reachable{check="tcp",service="svc",target="a"} 1.0' in text
        assert "process_resident_memory_bytes" in text
        status, text = await asyncio.to_thread(get, "/probe?target=blk")
        assert status == 200 and "probe_success 0.0" in text
        assert 'probe_check_failures_total{check="tcp",failure="connection_reset",service="svc",target="blk"} 1.0' \
            in text
        assert "target=\"a\"" not in text and "probe_scheduler" not in text  # fresh registry, one target
        assert "probe_build_info" not in text  # scraped under the target's name: not a probe of the fleet
        status, _ = await asyncio.to_thread(get, "/probe?target=nope")
        assert status == 400
        status, text = await asyncio.to_thread(get, "/-/healthy")
        assert (status, text) == (200, "OK\n")
        status, _ = await asyncio.to_thread(get, "/nothing-here")
        assert status == 404


def _get_many(port: int, path: str, n: int, headers: dict[str, str] | None = None,
              ) -> list[tuple[int, str, str | None]]:
    """``n`` requests at once, each from its own thread: (status, body, Retry-After)."""
    def one(_: int) -> tuple[int, str, str | None]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return resp.status, resp.read().decode(), resp.headers.get("Retry-After")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), exc.headers.get("Retry-After")

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


async def test_a_burst_of_probe_requests_waits_its_turn_and_is_never_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """600 requests at once (a Prometheus with hundreds of /probe targets): all answered, none refused,
    never more measurements at once than the limit."""
    monkeypatch.setattr(endpoints_mod, "PROBE_CONCURRENCY", 16)
    d = make_daemon(targets_yaml(["slow"], interval=3600, extra=", options: {delay: 0.05}"))
    async with serving(d) as port:
        STATS.update(max_active=0)
        answers = await asyncio.to_thread(_get_many, port, "/probe?target=slow", 600)
    assert [status for status, _, _ in answers].count(200) == 600
    assert all("probe_success 1.0" in body for _, body, _ in answers)
    assert STATS["max_active"] <= 16


async def test_probe_requests_beyond_the_queue_get_503_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoints_mod, "PROBE_CONCURRENCY", 2)
    monkeypatch.setattr(endpoints_mod, "PROBE_QUEUE", 10)
    d = make_daemon(targets_yaml(["slow"], interval=3600, extra=", options: {delay: 0.5}"))
    async with serving(d) as port:
        answers = await asyncio.to_thread(_get_many, port, "/probe?target=slow", 40)
    refused = [a for a in answers if a[0] == 503]
    assert 10 <= len(answers) - len(refused) < 40 and refused
    assert all(retry == "5" and "more than 10" in body for _, body, retry in refused)


async def test_probe_honours_prometheus_scrape_timeout_and_stores_nothing_cut_short() -> None:
    store = ListStore()
    d = make_daemon(targets_yaml(["slow"], interval=3600, extra=", options: {delay: 30}"), store=store, grace=0.5)
    async with serving(d) as port:
        stored = len(store.records)
        t0 = time.monotonic()
        answers = await asyncio.to_thread(_get_many, port, "/probe?target=slow", 1,
                                          {"X-Prometheus-Scrape-Timeout-Seconds": "1.5"})
        took = time.monotonic() - t0
    assert answers[0][0] == 200 and "probe_success 0.0" in answers[0][1]
    assert took < 10  # 1 s of measuring (1.5 s less the margin), not the target's 30 s
    assert len(store.records) == stored


async def test_real_store_receives_records(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    d = make_daemon(targets_yaml(["a"], interval=10), store=store)
    await run_for(d, 0.3)
    with Store(tmp_path / "s.sqlite") as again:
        assert again.count() == 2  # one check + one verdict, flushed at shutdown


class SlowStore(ListStore):
    """A store whose every call blocks like a slow fsync, noting the thread it ran on."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay, self.threads = delay, set[str]()

    def append(self, records: Any) -> None:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        super().append(records)


async def test_store_writes_run_off_the_event_loop() -> None:
    # 3 targets every second, each append blocking 0.3 s like a slow fsync: written inline, the loop
    # would stall 0.9 s per round; in the writer thread it stays responsive and every record lands.
    store = SlowStore(0.3)
    d = make_daemon(targets_yaml(["a", "b", "c"], interval=1.0), store=store)
    assert await run_for(d, 2.5) == 0
    assert store.threads and all(name.startswith("probe-store") for name in store.threads)
    h = d.state.health
    assert store.closed and len(store.records) == h.records_written == 18  # 3 runs x 3 targets x 2 records
    assert h.store_pending == 0 and sum(h.store_seconds.counts) >= 9
    assert sum(h.loop_lag.counts) >= 5
    stalls_over_250ms = sum(h.loop_lag.counts[h.loop_lag.bounds.index(0.25) + 1:])
    assert stalls_over_250ms == 0, h.loop_lag.counts
    body = render(d.state).decode()
    assert "probe_event_loop_lag_seconds_count" in body and "probe_store_write_seconds_count" in body
    assert "probe_store_pending_writes 0.0" in body


# -- Real process, real signals ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def scrape(port: int, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        return str(resp.read().decode())


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def start_daemon(targets: Path, store: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "probe", "daemon", "--targets", str(targets), "--store", str(store),
            "--listen", f"127.0.0.1:{port}", "--measure", "tests.service.test_daemon:fake_measure", *extra]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.kill()
    return proc.communicate(timeout=10)


def test_sighup_reload_and_sigterm_shutdown_of_a_real_process(tmp_path: Path) -> None:
    targets, store_path, port = tmp_path / "targets.yaml", tmp_path / "probe.sqlite", free_port()
    targets.write_text(targets_yaml(["a"], interval=1))
    proc = start_daemon(targets, store_path, port)
    try:
        wait_for(lambda: 'target="a"' in scrape(port), 15, "target a in /metrics")
        targets.write_text(targets_yaml(["b"], interval=1))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: 'target="b"' in (t := scrape(port)) and 'target="a"' not in t, 10, "reload to b")
        targets.write_text("settings: {interval: nope}\ntargets: []\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "probe_config_last_reload_successful 0.0" in scrape(port), 10, "failed reload metric")
        assert 'target="b"' in scrape(port)  # still measuring the old configuration
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        _, err = stop(proc)
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    messages = [entry["msg"] for entry in logs]
    assert "configuration reloaded" in messages and "daemon stopped" in messages
    failed = next(e for e in logs if e["msg"].startswith("reload failed"))
    assert "targets.yaml:1" in failed["error"] and "settings.interval" in failed["error"]
    with Store(store_path) as store:
        assert {r["target"] for r in store.query()} == {"a", "b"}


def test_sigterm_cancels_a_hung_run_within_grace(tmp_path: Path) -> None:
    targets, store_path, port = tmp_path / "targets.yaml", tmp_path / "probe.sqlite", free_port()
    targets.write_text(targets_yaml(["quick"], interval=60) + "  - {name: hung, service: svc, category: x, "
                       "addresses: [127.0.0.1], checks: [tcp], options: {delay: 120}}\n")
    proc = start_daemon(targets, store_path, port, "--grace", "1")
    try:
        wait_for(lambda: "probe_measurements_in_flight 1.0" in scrape(port), 15, "the hung run in flight")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 5
    finally:
        stop(proc)
    with Store(store_path) as store:
        assert {r["target"] for r in store.query()} == {"quick"}  # flushed at exit


def test_invalid_config_at_start_exits_2_and_busy_port_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: []\n")
    done = subprocess.run([sys.executable, "-m", "probe", "daemon", "--targets", str(bad), "--no-store"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "bad.yaml" in done.stderr
    good = tmp_path / "good.yaml"
    good.write_text(targets_yaml(["a"]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "probe", "daemon", "--targets", str(good), "--no-store",
                               "--listen", f"127.0.0.1:{port}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1 and "cannot listen" in done.stderr
