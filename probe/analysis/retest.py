"""Re-tests on a verdict change: the policy, pure. The daemon runs it; bench/events_accuracy.py simulates it.

Why. At a fixed interval the event detector needs 3-5 bad measurements in a row before it can
tell a blocking from random failures without raising false alarms (docs/design/events.md), so
an onset is announced 3-5 intervals late. Measuring the target again, a few times and soon,
exactly when its outcome changes buys that evidence within the same interval, and costs nothing
while nothing changes.

The rules:

* An *outcome* is what a run's reachability checks concluded: ``"ok"``, the event type of the
  blocking (``dns``, ``tcp_ip``, ``tls``, ``http``, ...), or None when inconclusive (an outage
  says nothing, so it is no change either). Throttling counts as ``"ok"``: re-tests do not run
  the throughput family (it has its own confirmation run), so they could not confirm it.
* A regular run whose outcome differs from the target's last decisive one gets
  ``settings.retests`` re-tests, ``settings.retest_spacing`` seconds apart. A target not measured
  yet counts as ``"ok"`` (the detector's prior assumes so too): one found blocked at start-up is
  re-tested.
* A regular run also gets a burst while the event detector is *unsettled* about the target
  (:attr:`probe.analysis.events.Detector.unsettled`): lift evidence in an open steady event, or in an
  intermittent one whose quiet has outlasted its pauses, or a blocked point after a pause (noise or a
  phase?); such a burst has ``2 × retests`` re-tests (:func:`burst_size`). It costs nothing while
  nothing changes (the detector is settled) and during a steady blocking (every point blocked).
* What a re-test cannot see (throttling: no throughput check) is confirmed by the adaptive
  interval's early full runs instead (:class:`Pacer`, :func:`paced_outcome`), with re-tests on too.
* A burst fits its interval: re-tests are ``retest_spacing`` apart, or closer when the interval
  is short (:func:`fit_spacing`), so that they run before the next regular run, not never.
* Re-tests never trigger re-tests (no cascade), but they do set the last outcome: a random
  failure whose re-tests pass costs one burst, not a second one when the next run passes.
* A re-test measures the target without :data:`SKIPPED_CHECKS`; control targets are not
  re-tested (they say whether the probe's own network works).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple, TypeVar

if TYPE_CHECKING:
    from probe.core.config import Target

#: Check families a re-test does not run: the throughput test (expensive, and throttling has
#: its own confirmation run) and the raw-packet diagnostics (intrusive, evidence only).
SKIPPED_CHECKS = frozenset({"throughput", "diagnostics"})
Obs = TypeVar("Obs")

#: Blocking values a re-test cannot see (they come from the skipped families).
_UNSEEN = frozenset({"throttling"})


def outcome_of(blocking: object) -> str | None:
    """A verdict's ``blocking`` as a re-test decision sees it: "ok", the blocking, or None."""
    if blocking is None:
        return None
    if blocking is False or blocking in _UNSEEN:
        return "ok"
    return str(blocking)


def run_outcome(blocking: object) -> str | None:
    """A verdict's ``blocking`` as a full run sees it: "ok", the blocking (throttling included), or None."""
    if blocking is None:
        return None
    return "ok" if blocking is False else str(blocking)


def paced_outcome(found: str | None, retesting: bool) -> str | None:
    """A full run's outcome as the adaptive interval tracks it: as it is, or with re-tests on
    (``retesting``) only what a re-test cannot see (throttling): the bursts confirm the rest."""
    if found is None or not retesting or found in _UNSEEN:
        return found
    return "ok"


def burst_size(count: int, changed: bool) -> int:
    """Re-tests in a burst: ``count`` after a change; twice that while the detector is unsettled and the
    outcome did not change (a steady blocking's lift: 13 good points decide it, see events.DetectParams)."""
    return count if changed else 2 * count


def fit_spacing(count: int, spacing: float, left: float) -> float:
    """Seconds between the re-tests of a burst of ``count`` that should all run within ``left``
    seconds (before the target's next regular run): ``spacing``, or less on a short interval."""
    return max(0.0, min(spacing, left / (count + 1)))


def retest_target(target: Target) -> Target | None:
    """The target as a re-test measures it (its reachability checks); None when it is not re-tested."""
    checks = tuple(c for c in target.checks if c not in SKIPPED_CHECKS)
    if target.control or not checks:
        return None
    return dataclasses.replace(target, checks=checks)


class Tracker:
    """The last decisive outcome of each target; says which runs are a change (to re-test)."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def observe(self, key: str, found: str | None, *, retest: bool = False) -> bool:
        """Note one run's outcome; True when it is a regular run whose outcome changed."""
        if found is None:
            return False
        previous = self._last.get(key, "ok")
        self._last[key] = found
        return not retest and found != previous

    def last(self, key: str) -> str:
        """The target's last decisive outcome ("ok" when never measured)."""
        return self._last.get(key, "ok")

    def retain(self, keys: Iterable[str]) -> None:
        """Forget targets no longer configured."""
        keep = set(keys)
        self._last = {k: v for k, v in self._last.items() if k in keep}


class Asks(NamedTuple):
    """What the event detector asks for after a run: more points now, from a re-test (``retest``) or
    from a full run (``run``: with re-tests on, in what they cannot see), and whether an event of the
    target is ``ongoing`` (in what the adaptive interval tracks)."""

    retest: bool = False
    run: bool = False
    ongoing: bool = False


@dataclasses.dataclass(frozen=True)
class Adaptive:
    """The adaptive interval's bounds (see :class:`Pacer`)."""

    divisor: float = 8.0  # an early run comes interval / divisor after the previous run ends...
    factor: float = 1.25  # ...and never sooner than its last run's time x factor + margin
    margin: float = 0.25
    onset: int = 4  # early runs at most after a change to a blocking (an onset needs 3-5 bad points)
    lift: int = 12  # early runs at most after a change back to "ok" (a steady blocking's lift needs 13 points)
    confirm_ok: int = 2  # early runs after a change back to "ok" even when the detector is settled (see Pacer)
    budget: float = 24.0  # early runs a target may have in hand (a token bucket) ...
    refill: float = 0.25  # ... earned per interval: at most a quarter more runs than the grid, in the long run


@dataclasses.dataclass
class _Pace:
    left: int = 0
    confirm: int = 0
    tokens: float = 0.0
    at: float | None = None


class Pacer:
    """The adaptive interval, pure: after a regular run, whether the target's next regular run should come
    early (before its slot on the grid), and when.

    While something is still to decide (the last decisive outcome is a blocking: an onset needs 3-5 bad
    points; or the detector is unsettled: a steady blocking's lift needs 13 good ones) the next run comes
    ``interval / divisor`` after this one, never sooner than the run's own time x ``factor`` + ``margin``;
    at most ``onset`` times after a change to a blocking, ``lift`` times after a change back to "ok" (a
    run whose outcome changed resets the count); only while the target's bucket (``budget``, earning
    ``refill`` per interval) has a run left; and only when it leaves room before the next slot (then the
    grid takes over again). A change back to "ok" also gets ``confirm_ok`` early runs when the detector
    is settled: without them a flapping blocking was sampled densely in its blocked phases only, looked
    steady, and its pauses then looked like lifts (bench: 52 spurious events; with 2: 1). While an event
    of the target is ``ongoing`` its onset is decided: no onset runs and no ``confirm_ok``, only the
    detector's lift (``unsettled``) is paced, so an intermittent blocking does not empty the bucket before
    its end. A random failure costs about 3 early runs; nothing changes while nothing changes.
    """

    def __init__(self, params: Adaptive | None = None) -> None:
        self.params = params or Adaptive()
        self._pace: dict[str, _Pace] = {}

    def early(self, key: str, now: float, *, interval: float, took: float, next_regular: float, changed: bool,
              blocked: bool, unsettled: bool, ongoing: bool = False) -> float | None:
        """The time of an early run after a run that ended at ``now`` (None: keep the grid)."""
        p, pace = self.params, self._pace.setdefault(key, _Pace(tokens=self.params.budget))
        if pace.at is not None:
            pace.tokens = min(p.budget, pace.tokens + p.refill * max(0.0, now - pace.at) / interval)
        pace.at = now
        if changed:
            pace.left, pace.confirm = (p.onset, 0) if blocked else (p.lift, 0 if ongoing else p.confirm_ok)
        wanted = ((blocked and not ongoing) or unsettled) and pace.left > 0
        if not (wanted or pace.confirm > 0) or pace.tokens < 1:
            return None
        gap = max(interval / p.divisor, p.factor * took + p.margin)
        if now + 2 * gap > next_regular:
            return None
        if wanted:
            pace.left -= 1
        else:
            pace.confirm -= 1
        pace.tokens -= 1
        return now + gap

    def retain(self, keys: Iterable[str]) -> None:
        """Forget targets no longer configured."""
        keep = set(keys)
        self._pace = {k: v for k, v in self._pace.items() if k in keep}


def simulate(
    regular: Iterable[tuple[float, Obs]], draw: Callable[[float, float], Obs], outcome: Callable[[Obs], str | None],
    count: int, spacing: float, unsettled: Callable[[float, Obs, bool, bool], Asks] | None = None,
    adaptive: Adaptive | None = None, interval: float = 300.0, *,
    run: tuple[Callable[[float, float], Obs], Callable[[Obs], str | None]] | None = None,
) -> list[tuple[float, Obs, int]]:
    """The policy on a synthetic series (bench/events_accuracy.py, tests): what the probe would observe.

    ``regular`` holds the regular runs' (time, observation) in time order; ``outcome`` reads an
    observation as a run's outcome as a re-test decision sees it (:func:`outcome_of`). ``unsettled``, when
    given, is fed every observation (time, observation, on the grid, is a re-test) in order and answers
    what the detector asks for after it (:class:`Asks`: the daemon's second trigger). After each change
    (or unsettled regular run), re-test k (1..count) observes ``draw(t, t + k * spacing)``, t being the
    regular run's time.
    Returns (time, observation, k), k = 0 for a regular run, in time order when ``count * spacing`` is
    less than the interval.
    ``adaptive``, when given, adds the early regular runs of :class:`Pacer` (runs taking no time;
    ``interval``: the grid's) after a run that started no burst, as the daemon does: every target's with
    ``count`` 0, else only for what re-tests cannot see. ``run`` = (draw, outcome) for a full run (an early
    one), when it sees more than a re-test (:func:`run_outcome`); default: ``draw`` and ``outcome``.
    """
    draw_run, run_of = run if run is not None else (draw, outcome)
    tracker, runs, pacer = Tracker(), Tracker(), Pacer(adaptive)
    out: list[tuple[float, Obs, int]] = []
    regulars = list(regular)
    for i, (t, seen) in enumerate(regulars):
        upto = regulars[i + 1][0] if i + 1 < len(regulars) else t + interval
        at: float | None = t
        while at is not None:
            if at != t:
                seen = draw_run(t, at)
            out.append((at, seen, 0))
            changed = tracker.observe("", outcome(seen))
            run_changed = runs.observe("", paced_outcome(run_of(seen), bool(count)))
            asks = unsettled(at, seen, at == t, False) if unsettled is not None else Asks()
            if count and (changed or asks.retest):
                for k in range(1, burst_size(count, changed) + 1):
                    again = draw(t, at + k * spacing)
                    tracker.observe("", outcome(again), retest=True)
                    if unsettled is not None:
                        unsettled(at + k * spacing, again, False, True)
                    out.append((at + k * spacing, again, k))
                at = None
            elif adaptive is not None:  # no burst: the adaptive interval (with re-tests, for what they cannot see)
                at = pacer.early("", at, interval=interval, took=0.0, next_regular=upto, changed=run_changed,
                                 blocked=runs.last("") != "ok", unsettled=asks.run, ongoing=asks.ongoing)
            else:
                at = None
    return out
