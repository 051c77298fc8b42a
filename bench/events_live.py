"""How soon the real daemon notices a blocking start and end, end to end in the lab (not a timed test).

Runs ``probe daemon`` in the lab's client namespace at a short interval, switches techniques on and
off at known times (an SNI reset on one target and an IP drop on another, at the same time, at a
random phase of the run grid), and reads the daemon's own log lines ("event started" / "event
ended", one JSON object a line) to compute, per cycle and technique, the notice delay of the onset
and of the end in probe intervals (the log line's time minus the switch's time). Also counts events
that started outside any switched-on period (false events). Needs root (network namespaces).

    sudo PYTHONPATH=$PWD .venv/bin/python bench/events_live.py [--interval 10] [--cycles 3] [--retests 4] [--json]

Figures go to stdout; the daemon's log stays in the lab state directory until the lab is torn down.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probe.lab import Lab  # noqa: E402

#: (technique, target, technique parameters): the two blockings of the issue (14, class 6).
SWITCHES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("sni_rst", "web.telegram.test", {"sni": "web.telegram.test"}),
    ("ip_drop", "tg-cloud.cloud.test", {"host": "tg-cloud.cloud.test"}),
)
#: A throttling by SNI (the lab's htb policer), seen only by the throughput check: a re-test does not
#: run it, so its onset and end are confirmed by the adaptive interval's early full runs.
THROTTLE = ("throttle_sni", "twitter.test", {"sni": "twitter.test", "rate_kbit": 256, "direction": "down"})
#: What each switch's target measures (the lab's defaults otherwise).
TARGET_OPTIONS: dict[str, dict[str, Any]] = {
    "twitter.test": {"checks": ["dns", "tcp", "tls", "http", "throughput"],
                     "throughput_url": "https://twitter.test/large"},
}


@dataclass
class Cycle:
    """One on/off period: wall-clock times of the switches and of what the daemon logged."""

    technique: str
    target: str
    on: float
    off: float = 0.0
    started: float | None = None  # first "event started" for the target after ``on``
    ended: float | None = None  # first "event ended" for the target after ``off``


@dataclass
class Result:
    interval: float
    retests: int
    cycles: list[Cycle] = field(default_factory=list)
    false_events: int = 0
    log_lines: int = 0

    def delays(self, technique: str | None = None) -> tuple[list[float], list[float]]:
        """Onset and end notice delays, in intervals; a missed one counts as infinite."""
        on, off = [], []
        for c in self.cycles:
            if technique is not None and c.technique != technique:
                continue
            on.append((c.started - c.on) / self.interval if c.started is not None else float("inf"))
            off.append((c.ended - c.off) / self.interval if c.ended is not None else float("inf"))
        return on, off


def _ts(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def read_log(path: Path) -> list[dict[str, Any]]:
    """The daemon's JSON log lines (others, e.g. a traceback's, are skipped)."""
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and "msg" in item and "ts" in item:
            item["t"] = _ts(item["ts"])
            out.append(item)
    return out


def _wait(predicate: Callable[[], bool], seconds: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def run(lab: Lab, *, interval: float, cycles: int, retests: int, on_intervals: float = 8.0,
        off_intervals: float = 10.0, seed: int = 1, echo: Callable[[str], None] = print,
        switches: Sequence[tuple[str, str, dict[str, Any]]] = SWITCHES) -> Result:
    """The daemon in ``lab``'s client namespace through ``cycles`` on/off periods of the techniques."""
    rng = random.Random(seed)
    settings: dict[str, Any] = {"interval": interval, "jitter": 0.1, "retests": retests}
    if retests:
        settings["retest_spacing"] = round(interval / (retests + 1), 3)
    names = [target for _, target, _ in switches]
    stamp = time.monotonic_ns()
    targets = lab.state / f"events-live-{stamp}.yaml"
    targets.write_text(lab.targets_yaml(names, {n: TARGET_OPTIONS[n] for n in names if n in TARGET_OPTIONS},
                                        settings=settings))
    log = lab.state / f"events-live-{stamp}.log"
    argv = [sys.executable, "-m", "probe", "daemon", "--targets", str(targets), "--store",
            str(lab.state / f"events-live-{stamp}.sqlite"), "--log-level", "info",
            "--i-consent"]  # the lab measures its own namespaces (as probe.lab's own runs)
    lab.spawn(lab.ns_client, argv, log.name)
    result = Result(interval, retests)

    def measured(name: str) -> int:
        return sum(1 for x in read_log(log) if x["msg"] == "measured" and x.get("target") == name
                   and "retest" not in x)

    if not _wait(lambda: all(measured(n) >= 3 for n in names), 10 * interval + 30):
        raise RuntimeError(f"the daemon did not measure every target 3 times; log: {log.read_text()[-2000:]}")
    for k in range(cycles):
        time.sleep(rng.uniform(0, interval))  # a random phase of the run grid
        handles, now = [lab.apply(tech, **params) for tech, _, params in switches], time.time()
        batch = [Cycle(tech, target, now) for tech, target, _ in switches]
        time.sleep(on_intervals * interval)
        for handle in handles:
            lab.remove(handle)
        now = time.time()
        for c in batch:
            c.off = now

        def ended(batch: list[Cycle] = batch) -> bool:
            lines = read_log(log)
            return all(any(x["msg"] == "event ended" and x.get("target") == c.target and x["t"] >= c.off
                           for x in lines) for c in batch)

        _wait(ended, off_intervals * interval)
        result.cycles += batch
        echo(f"cycle {k + 1}/{cycles} done")
    lines = read_log(log)
    result.log_lines = len(lines)
    for c in result.cycles:
        c.started = next((x["t"] for x in lines if x["msg"] == "event started" and x.get("target") == c.target
                          and c.on <= x["t"] <= c.off), None)
        c.ended = next((x["t"] for x in lines if x["msg"] == "event ended" and x.get("target") == c.target
                        and x["t"] >= c.off), None)
    windows = [(c.target, c.on, c.off) for c in result.cycles]
    result.false_events = sum(1 for x in lines if x["msg"] == "event started"
                              and not any(x.get("target") == t and on <= x["t"] <= off for t, on, off in windows))
    return result


def _q(values: Sequence[float], q: float) -> float:
    xs = sorted(values)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def report(result: Result) -> list[str]:
    lines = [f"interval {result.interval:g} s, re-tests {result.retests}; delays in intervals after the switch",
             f"{'technique':12} {'cycle':>5} {'onset':>7} {'end':>7}"]
    techniques = list(dict.fromkeys(c.technique for c in result.cycles))
    for i, c in enumerate(result.cycles):
        on = (c.started - c.on) / result.interval if c.started is not None else float("inf")
        off = (c.ended - c.off) / result.interval if c.ended is not None else float("inf")
        lines.append(f"{c.technique:12} {i // len(techniques) + 1:5d} {on:7.2f} {off:7.2f}")
    for tech in [None, *techniques]:
        ons, offs = result.delays(tech)
        lines.append(f"{tech or 'all':12} onset median {statistics.median(ons):.2f} p95 {_q(ons, 0.95):.2f} "
                     f"max {max(ons):.2f} | end median {statistics.median(offs):.2f} p95 {_q(offs, 0.95):.2f} "
                     f"max {max(offs):.2f}")
    lines.append(f"false events (started outside a switched-on period): {result.false_events}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", type=float, default=10.0, help="the daemon's interval, seconds")
    ap.add_argument("--cycles", type=int, default=3, help="on/off periods (both techniques at once)")
    ap.add_argument("--retests", type=int, default=4, help="settings.retests (0: none)")
    ap.add_argument("--on", type=float, default=8.0, help="intervals each technique stays on")
    ap.add_argument("--prefix", default="loopl", help="lab prefix (namespaces); at most 8 characters")
    ap.add_argument("--techniques", default="sni_rst,ip_drop",
                    help="switched on and off together, comma-separated: sni_rst, ip_drop, throttle_sni")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args(argv)
    began = time.monotonic()
    known = {tech: (tech, target, params) for tech, target, params in (*SWITCHES, THROTTLE)}
    switches = [known[t] for t in args.techniques.split(",")]
    with Lab(args.prefix) as lab:
        result = run(lab, interval=args.interval, cycles=args.cycles, retests=args.retests, on_intervals=args.on,
                     switches=switches)
    print("\n".join(report(result)))
    print(f"elapsed {time.monotonic() - began:.0f} s")
    if args.json:
        on, off = result.delays()
        print(json.dumps({"interval": result.interval, "retests": result.retests, "onset": on, "end": off,
                          "techniques": [c.technique for c in result.cycles], "false_events": result.false_events}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
