"""Fleet-wide events: many probes' verdicts in, one event per (service, network, blocking type) out.

Pure: no I/O, no clock (the caller says what time it is). The collector feeds it the
measurements of the central store; ``bench/fleet_events.py`` feeds it a simulated fleet.

A *network* is an ASN (scope ``asn``) or a country (scope ``cc``). Measurements are grouped into
bins of one measurement interval. A bin is closed ``lateness`` bins after it ends (uploads arrive
late); observations for a closed bin are counted in ``late`` and dropped. Per closed bin:

1. **Controls.** A probe whose control targets failed in the bin (and none answered) is offline:
   its measurements of that bin are inconclusive, as is a verdict with ``blocking: null`` (the
   probe's own controls failed: ``network_down``, ``*_outage``). A whole ASN losing connectivity
   is every probe of it offline: nothing is left to count.
2. **Worldwide outages.** For each (service, type), a country *fails* when at least
   ``min_probes`` of its probes and half of them see that type. When ``world_min_countries``
   countries or ``world_share`` of the reporting countries fail, *other than the network's own*,
   the service is down for everyone: that bin says nothing about censorship anywhere.
3. **Evidence.** Each probe's false-failure rate ``p_i`` for (service, type) is learnt from its
   quiet periods (like :mod:`probe.analysis.events`): what it saw is learnt ``settle_bins`` later,
   unless an event of its ASN or of its country counted it among its affected probes meanwhile (a
   3-probe ASN's ban is no noise to its country's series, which does not fire on it). A bin's
   log-likelihood ratio of "a share ``design_share`` of the network's probes is blocked (at
   ``block_rate``)" over "noise" is summed over the probes that reported; a noisy probe's
   failures weigh little. A CUSUM over bins fires at ``h_on`` nats, and only if the bin has at
   least ``min_probes`` blocked probes making up at least ``min_share`` of those reporting.
4. **Bounds.** On firing, the points of the probes that saw the blocking (the *affected* probes)
   over the last ``lookback`` points are searched for the maximum-likelihood change point:
   ``start_high`` is the first blocked measurement of the episode, ``start_low`` the last ok one
   of the affected probes before it; ``start_time`` their midpoint. Many probes at staggered
   times bound a change far tighter than one probe's interval.
5. **Lift.** While open, the affected probes' points are tested "back to noise" against "still
   blocked at least ``lift_rate``" (``h_off`` nats); the end is placed like the start, over the
   probes that *carried* the event: blocked in at least half of their points from their first
   blocked one to the end first placed. A probe that joined on noise (two failures in a row) or in
   a partial rollout was never blocked would otherwise place the end early with its ok points. In
   both placements a probe's failures outside the event weigh at its own noise (at least 5 %), so
   one noisy probe failing just after a lift moves the end little. A probe's status and streak
   count once a bin, though it is in two series (its ASN's and its country's).

The share of probes is reported: the affected probes whose last decisive point is blocked, over
the probes that reported in the last two bins. A partial rollout (one city) shows as a share < 1.

Memory is bounded: per probe and (service, type) two decayed counts and the last status; per
series a CUSUM, a deque of ``lookback`` points and the open event; ended events beyond
``keep_ended`` are dropped (the caller stores them); series idle for ``idle_bins`` are evicted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from probe.analysis.events import event_type, status_for

Scope = Literal["asn", "cc"]


@dataclass(frozen=True)
class Observation:
    """One verdict of one probe, as the fleet needs it."""

    time: float
    probe_id: str
    cc: str
    asn: str
    service: str
    #: The verdict's ``blocking``: False (accessible), None (inconclusive) or the blocking kind.
    blocking: object
    #: A control target's measurement: says whether the probe's own link works.
    control: bool = False


def observation(measurement: Mapping[str, Any]) -> Observation | None:
    """The observation an OONI measurement (``probe.core.ooni``, as a dict) carries; None without a verdict."""
    keys = measurement.get("test_keys")
    if not isinstance(keys, Mapping) or "blocking" not in keys:
        return None
    control = keys.get("category") == "control" or keys.get("control") is True
    service = keys.get("service") or measurement.get("service") or ""
    probe_id = measurement.get("probe_id") or (measurement.get("annotations") or {}).get("probe_id") or ""
    start = dt.datetime.fromisoformat(str(measurement["measurement_start_time"])).replace(tzinfo=dt.UTC)
    return Observation(
        time=start.timestamp(), probe_id=str(probe_id),
        cc=str(measurement.get("probe_cc") or "ZZ"), asn=str(measurement.get("probe_asn") or "AS0"),
        service=str(service), blocking=keys.get("blocking"), control=control,
    )


@dataclass(frozen=True)
class FleetParams:
    """Parameters of :class:`FleetDetector` (tuned with bench/fleet_events.py)."""

    interval: float = 300.0
    lateness: int = 2
    min_probes: int = 3
    min_share: float = 0.1
    design_share: float = 0.25
    block_rate: float = 0.9
    lift_rate: float = 0.5
    h_on: float = 12.5
    h_off: float = 8.0
    noise_prior: float = 0.03
    prior_weight: float = 10.0
    noise_min: float = 0.01
    noise_max: float = 0.4
    memory: float = 500.0
    settle_bins: int = 4
    warmup_bins: int = 12
    world_min_countries: int = 3
    world_share: float = 0.3
    lookback: int = 4096
    history: int = 4
    keep_ended: int = 10_000
    idle_bins: int = 7 * 288

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.lateness < 0 or self.min_probes < 1 or self.lookback < 16:
            raise ValueError("interval > 0, lateness >= 0, min_probes >= 1, lookback >= 16")
        if not 0 < self.noise_min <= self.noise_max < self.lift_rate < self.block_rate < 1:
            raise ValueError("need 0 < noise_min <= noise_max < lift_rate < block_rate < 1")


@dataclass(frozen=True)
class FleetEvent:
    """One fleet event: a blocking type of a service in one network."""

    id: str
    scope: Scope
    network: str  # the ASN (AS1234) or the country (RU)
    cc: str  # the network's country
    asn: str  # the ASN, or "" for a country-wide event
    service: str
    type: str
    start_time: float
    start_low: float
    start_high: float
    end_time: float | None
    end_low: float | None
    end_high: float | None
    probes: int  # probes that see the blocking (now; at its widest once ended)
    reporting: int  # probes that reported in the last two bins (then)
    share: float  # probes / reporting
    detected_at: float  # end of the bin that fired it
    updated_at: float

    @property
    def ongoing(self) -> bool:
        return self.end_time is None


# -- internals ---------------------------------------------------------------------------------

SeriesKey = tuple[str, str, str, str]  # (scope, network, service, type)


@dataclass
class _Probe:
    """A probe's noise for one (service, type), and its last decisive status."""

    bad_w: float
    all_w: float
    last_bad: bool = False
    last_bin: int = -1
    streak: int = 0  # bins in a row it saw the type blocked
    busy_bin: int = -1  # the last bin it was among an open event's affected probes (not noise then)


@dataclass
class _Open:
    start: tuple[float, float, float]
    affected: set[str]
    detected_at: float
    end_s: float = 0.0
    probes: int = 0
    reporting: int = 0
    peak: tuple[float, int, int] = (0.0, 0, 0)  # (share, probes, reporting) at its widest


@dataclass
class _Series:
    cc: str
    first_bin: int
    s: float = 0.0
    points: deque[tuple[float, str, bool]] = field(default_factory=deque)
    open: _Open | None = None
    floor: float = -math.inf
    last_bin: int = -1
    recent: dict[str, int] = field(default_factory=dict)  # probe -> last bin it reported
    noise: _Probe = field(default_factory=lambda: _Probe(0.3, 10.0))  # the network's pooled noise
    # what the probes saw, learnt as noise ``settle_bins`` later unless an event fired meanwhile
    pending: deque[tuple[int, list[tuple[_Probe, bool]]]] = field(default_factory=deque)


def _network_keys(obs: Observation) -> tuple[tuple[str, str], tuple[str, str]]:
    return ("asn", obs.asn), ("cc", obs.cc)


class FleetDetector:
    """Incremental fleet event detection: ``feed`` observations, ``advance`` the clock, read events."""

    def __init__(self, params: FleetParams = FleetParams()) -> None:
        self.p = params
        self._bins: dict[int, list[Observation]] = {}
        self._closed_through = -1  # the last bin processed
        self._series: dict[SeriesKey, _Series] = {}
        self._probes: dict[tuple[str, str, str], _Probe] = {}
        self._types: dict[tuple[str, str, str], set[str]] = {}  # (scope, network, service) -> types seen
        self._since: dict[tuple[str, str, str], int] = {}  # (scope, network, service) -> first bin seen
        # each probe's last few verdicts per (scope, network, service): a blocking type seen for the
        # first time starts its series from them, so that its first event is bounded by the last ok
        self._history: dict[tuple[str, str, str], dict[str, deque[tuple[float, object]]]] = {}
        self._ended: deque[FleetEvent] = deque(maxlen=params.keep_ended)
        self._changed: dict[str, FleetEvent] = {}
        self._keep = 1.0 - 1.0 / params.memory
        self.late = 0  # observations dropped: their bin was closed already
        self.newest = -math.inf  # the latest measurement time fed: the data's own clock

    # -- public ---------------------------------------------------------------------------------

    def feed(self, observations: Iterable[Observation]) -> None:
        for obs in observations:
            b = int(obs.time // self.p.interval)
            if b <= self._closed_through:
                self.late += 1
                continue
            self._bins.setdefault(b, []).append(obs)
            self.newest = max(self.newest, obs.time)

    def advance(self, now: float) -> list[FleetEvent]:
        """Close every bin that ended ``lateness`` bins before ``now``; the events that changed.

        ``now`` on the data's clock may be -inf (:attr:`newest` before any observation was fed: a
        batch of measurements none of which is a service's verdict): nothing closes then."""
        if not math.isfinite(now):
            return []
        last = int(now // self.p.interval) - 1 - self.p.lateness
        for b in sorted(k for k in self._bins if k <= last):
            self._process(b, self._bins.pop(b))
        self._closed_through = max(self._closed_through, last)
        changed, self._changed = list(self._changed.values()), {}
        return changed

    def flush(self) -> list[FleetEvent]:
        """Close every buffered bin (batch use)."""
        if not self._bins:
            return self.advance(0.0) if self._changed else []
        return self.advance((max(self._bins) + 2 + self.p.lateness) * self.p.interval)

    def events(self) -> list[FleetEvent]:
        """The ended events kept, then the ongoing ones."""
        out = list(self._ended)
        for key, series in self._series.items():
            if series.open is not None:
                out.append(self._event(key, series, series.open, None))
        return sorted(out, key=lambda e: (e.start_time, e.scope, e.network, e.service, e.type))

    # -- one bin ------------------------------------------------------------------------------

    def _process(self, b: int, observations: list[Observation]) -> None:
        offline = self._offline(observations)
        targets = [o for o in observations if not o.control and o.probe_id not in offline
                   and o.blocking is not None and (o.blocking is False or event_type(o.blocking) is not None)]
        targets.sort(key=lambda o: o.time)
        failing = self._failing_countries(targets)
        grouped: dict[tuple[str, str, str], list[Observation]] = {}
        for obs in targets:
            for scope, network in _network_keys(obs):
                grouped.setdefault((scope, network, obs.service), []).append(obs)
                self._since.setdefault((scope, network, obs.service), b)
                self._history.setdefault((scope, network, obs.service), {}).setdefault(
                    obs.probe_id, deque(maxlen=self.p.history)).append((obs.time, obs.blocking))
                if obs.blocking is not False:
                    self._types.setdefault((scope, network, obs.service), set()).add(str(event_type(obs.blocking)))
        end = (b + 1) * self.p.interval
        for (scope, network, service), group in grouped.items():
            for kind in sorted(self._types.get((scope, network, service), ())):
                if self._worldwide(failing.get((service, kind), {}), group[0].cc):
                    continue  # the service is down in other countries too: not censorship here
                self._step((scope, network, service, kind), group[0].cc, group, b, end)
        self._evict(b)

    def _worldwide(self, world: Mapping[str, set[str]], own: str) -> bool:
        others = {cc for cc in world if cc and cc != own}
        reporting = world.get("", set()) - {own}
        return len(others) >= self.p.world_min_countries or (
            len(others) >= 2 and len(others) >= self.p.world_share * len(reporting))

    def _offline(self, observations: list[Observation]) -> set[str]:
        """Probes whose control targets failed in this bin, and none answered."""
        ok: set[str] = set()
        bad: set[str] = set()
        for obs in observations:
            if obs.control:
                (ok if obs.blocking is False else bad).add(obs.probe_id)
        return bad - ok

    def _failing_countries(self, targets: list[Observation]) -> dict[tuple[str, str], dict[str, set[str]]]:
        """Per (service, type): the countries where most of the reporting probes see that type
        (key "" holds every country that reported the service)."""
        seen: dict[tuple[str, str], dict[str, set[str]]] = {}  # (service, cc) -> kind -> probes
        reported: dict[tuple[str, str], set[str]] = {}
        for obs in targets:
            reported.setdefault((obs.service, obs.cc), set()).add(obs.probe_id)
            if obs.blocking is not False:
                seen.setdefault((obs.service, obs.cc), {}).setdefault(str(event_type(obs.blocking)), set()).add(
                    obs.probe_id)
        out: dict[tuple[str, str], dict[str, set[str]]] = {}
        countries: dict[str, set[str]] = {}
        for (service, cc), probes in reported.items():
            if len(probes) >= self.p.min_probes:
                countries.setdefault(service, set()).add(cc)
            for kind, bad in seen.get((service, cc), {}).items():
                if len(bad) >= self.p.min_probes and 2 * len(bad) >= len(probes):
                    out.setdefault((service, kind), {})[cc] = bad
        for (service, _kind), world in out.items():
            world[""] = countries.get(service, set())
        return out

    def _step(self, key: SeriesKey, cc: str, group: list[Observation], b: int, end: float) -> None:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(cc=cc, first_bin=self._since.get(key[:3], b),
                                                 points=deque(maxlen=self.p.lookback))
            before = [(t, pid, blocking) for pid, past in self._history.get(key[:3], {}).items()
                      for t, blocking in past if t < b * self.p.interval]
            for t, pid, blocking in sorted(before, key=lambda x: x[0]):
                status = status_for(key[3], blocking)
                if status != "inconclusive":
                    series.points.append((t, pid, status == "blocked"))
        kind = key[3]
        llr = 0.0
        blocked: set[str] = set()
        reporting: set[str] = set()
        p1 = self.p.block_rate
        pooled = self._noise(series.noise)
        for obs in group:
            status = status_for(kind, obs.blocking)
            if status == "inconclusive":
                continue
            bad = status == "blocked"
            probe = self._probe(obs.probe_id, key[2], kind)
            series.points.append((obs.time, obs.probe_id, bad))
            series.recent[obs.probe_id] = b
            reporting.add(obs.probe_id)
            if bad:
                blocked.add(obs.probe_id)
            p0 = max(self._noise(probe), pooled)
            if series.open is None:
                q = self.p.design_share * p1 + (1 - self.p.design_share) * p0
                llr += math.log(q / p0) if bad else math.log((1 - q) / (1 - p0))
            elif obs.probe_id in series.open.affected:
                lift = self.p.lift_rate
                o = series.open
                o.end_s = max(0.0, o.end_s + (math.log(p0 / lift) if bad else math.log((1 - p0) / (1 - lift))))
        # the probes' noise and last status, after the bin's evidence is counted
        per_probe: dict[str, bool] = {}
        for obs in group:
            status = status_for(kind, obs.blocking)
            if status != "inconclusive":
                per_probe[obs.probe_id] = status == "blocked"
        seen: list[tuple[_Probe, bool]] = []
        for pid, bad in per_probe.items():
            probe = self._probe(pid, key[2], kind)
            if probe.last_bin != b:  # once a bin: the probe is in its ASN's series and in its country's
                probe.streak = probe.streak + 1 if bad else 0
                probe.last_bad, probe.last_bin = bad, b
            seen.append((probe, bad))
        series.last_bin = b
        if series.open is None:
            series.pending.append((b, seen))
            while series.pending and series.pending[0][0] <= b - self.p.settle_bins:
                seen_b, seen = series.pending.popleft()
                for probe, bad in seen:  # no event came of it, at either scope: noise
                    if probe.busy_bin < seen_b:
                        self._learn(probe, bad)
                        self._learn(series.noise, bad)
            warm = b - series.first_bin >= self.p.warmup_bins  # before that, only learn the noise
            series.s = max(0.0, series.s + llr) if warm else 0.0
            share = len(blocked) / len(reporting) if reporting else 0.0
            if series.s >= self.p.h_on and len(blocked) >= self.p.min_probes and share >= self.p.min_share:
                self._fire(key, series, blocked, end)
        else:
            self._refresh(key, series, b, end)
            if series.open is not None and series.open.end_s >= self.p.h_off:
                self._close(key, series, end)

    def _probe(self, pid: str, service: str, kind: str) -> _Probe:
        probe = self._probes.get((pid, service, kind))
        if probe is None:
            probe = self._probes[(pid, service, kind)] = _Probe(
                self.p.noise_prior * self.p.prior_weight, self.p.prior_weight)
        return probe

    def _noise(self, probe: _Probe) -> float:
        return min(self.p.noise_max, max(self.p.noise_min, probe.bad_w / probe.all_w))

    def _learn(self, probe: _Probe, bad: bool) -> None:
        probe.bad_w = probe.bad_w * self._keep + (1.0 if bad else 0.0)
        probe.all_w = probe.all_w * self._keep + 1.0

    def _place(self, key: SeriesKey, series: _Series, affected: set[str], onset: bool,
               floor: float) -> tuple[float, float]:
        """(low, high): the maximum-likelihood change among the affected probes' points after ``floor``
        (sharp model; each probe's failures outside the event at its own noise, at least 5 %, so that a
        noisy probe's failure just before an onset or just after a lift moves the change little)."""
        pts = [(t, pid, bad) for t, pid, bad in series.points if pid in affected and t > floor]
        if not pts:
            return (0.0, 0.0)
        p1 = self.p.block_rate
        weights: dict[str, tuple[float, float]] = {}
        for pid in affected:
            p0 = max(0.05, self._noise(self._probe(pid, key[2], key[3])))
            weights[pid] = (math.log(p1 / p0), math.log((1 - p1) / (1 - p0)))
        total, best, best_i = 0.0, -math.inf, len(pts) - 1
        for i in range(len(pts) - 1, -1, -1):
            t, pid, bad = pts[i]
            on_bad, on_ok = weights[pid]
            total += (on_bad if bad else on_ok) * (1 if onset else -1)
            if bad == onset and total > best:
                best, best_i = total, i
        high = pts[best_i][0]
        low = next((t for t, _, bad in reversed(pts[:best_i]) if bad != onset), high)
        return low, high

    @staticmethod
    def _carriers(series: _Series, affected: set[str], floor: float, until: float) -> set[str]:
        """The affected probes that carried the event: blocked in at least half of their points from their
        first blocked one after ``floor`` through ``until``. A probe that joined on noise (two failures in
        a row) or was never blocked is not one: its ok points would look like the end."""
        counts: dict[str, list[int]] = {}
        for t, pid, bad in series.points:
            if floor < t <= until and pid in affected and (bad or pid in counts):
                c = counts.setdefault(pid, [0, 0])
                c[0] += bad
                c[1] += 1
        return {pid for pid, (bad, total) in counts.items() if 2 * bad >= total}

    def _fire(self, key: SeriesKey, series: _Series, blocked: set[str], end: float) -> None:
        # the affected probes: those blocked now, and those whose last status is blocked
        affected = set(blocked) | {pid for pid, b in series.recent.items()
                                   if b >= series.last_bin - 1 and self._probes[(pid, key[2], key[3])].last_bad}
        low, high = self._place(key, series, affected, onset=True, floor=series.floor)
        series.open = _Open(start=((low + high) / 2.0, low, high), affected=affected, detected_at=end)
        series.s = 0.0
        series.pending.clear()
        self._refresh(key, series, series.last_bin, end)

    def _refresh(self, key: SeriesKey, series: _Series, b: int, end: float) -> None:
        o = series.open
        assert o is not None
        recent = [pid for pid, last in series.recent.items() if last >= b - 1]
        for pid in recent:  # a probe joins once blocked two bins in a row: one noisy failure does not
            if self._probes[(pid, key[2], key[3])].streak >= 2:
                o.affected.add(pid)
        for pid in o.affected:  # what it sees now is the event's, not its noise (for the other scope too)
            self._probe(pid, key[2], key[3]).busy_bin = b
        probes = sum(1 for pid in recent if pid in o.affected and self._probes[(pid, key[2], key[3])].last_bad)
        if (probes, len(recent)) != (o.probes, o.reporting):
            o.probes, o.reporting = probes, len(recent)
            o.peak = max(o.peak, (probes / len(recent) if recent else 0.0, probes, len(recent)))
            event = self._event(key, series, o, None, end)
            self._changed[event.id] = event

    def _close(self, key: SeriesKey, series: _Series, end: float) -> None:
        o = series.open
        assert o is not None
        floor = o.start[2] - 1e-6
        low, high = self._place(key, series, o.affected, onset=False, floor=floor)
        carriers = self._carriers(series, o.affected, floor, low)
        if carriers and carriers != o.affected:
            low, high = self._place(key, series, carriers, onset=False, floor=floor)
        low = max(low, o.start[2])
        high = max(high, low)
        event = self._event(key, series, o, ((low + high) / 2.0, low, high), end)
        self._ended.append(event)
        self._changed[event.id] = event
        series.open, series.floor, series.s = None, low, 0.0

    def _event(self, key: SeriesKey, series: _Series, o: _Open, end: tuple[float, float, float] | None,
               now: float | None = None) -> FleetEvent:
        scope, network, service, kind = key
        text = "|".join((scope, network, service, kind, f"{o.start[2]:.3f}"))
        _, probes, reporting = o.peak if end else (0.0, o.probes, o.reporting)
        return FleetEvent(
            id=hashlib.sha256(text.encode()).hexdigest()[:32], scope="asn" if scope == "asn" else "cc",
            network=network, cc=series.cc, asn=network if scope == "asn" else "", service=service, type=kind,
            start_time=o.start[0], start_low=o.start[1], start_high=o.start[2],
            end_time=end[0] if end else None, end_low=end[1] if end else None, end_high=end[2] if end else None,
            probes=probes, reporting=reporting, share=round(probes / reporting, 4) if reporting else 0.0,
            detected_at=o.detected_at, updated_at=now if now is not None else o.detected_at,
        )

    def _evict(self, b: int) -> None:
        if b % 64:
            return
        for key in [k for k, s in self._series.items() if s.open is None and b - s.last_bin > self.p.idle_bins]:
            del self._series[key]
            self._types.pop(key[:3], None)
            self._since.pop(key[:3], None)
            self._history.pop(key[:3], None)
        for series in self._series.values():
            for pid in [pid for pid, last in series.recent.items() if b - last > self.p.idle_bins]:
                del series.recent[pid]


def detect(observations: Iterable[Observation], params: FleetParams = FleetParams()) -> list[FleetEvent]:
    """Every fleet event in these observations (the batch form of :class:`FleetDetector`)."""
    det = FleetDetector(params)
    det.feed(observations)
    det.flush()
    return det.events()
