"""Fleet events on a real PostgreSQL through the real collectors: simulated measurements of a few
networks are uploaded, the job (one collector at a time) finds the ban and not the offline probe, and
``probe collector events --json``, ``GET /api/v1/events`` and ``/metrics`` show it."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from probe.cli import main
from probe.fleet import upload
from probe.fleet.enrol import enrol
from probe.fleet.localpg import CollectorProcess, sample_measurement
from tests.fleet.sources import measurements

Start = Callable[..., CollectorProcess]
INTERVAL = 300.0


def _measurement(pid: str, cc: str, asn: str, at: float, service: str, blocking: object) -> dict[str, Any]:
    m = sample_measurement(pid, at, cc=cc, asn=asn, service=service)
    m["test_keys"] = {**m["test_keys"], "blocking": blocking,  # type: ignore[dict-item]
                      "accessible": None if blocking is None else blocking is False,
                      "category": "control" if service == "control" else "messaging", "service": service}
    return m


def _fleet(now: float) -> dict[str, list[dict[str, Any]]]:
    """Two ASNs of AA, 4 probes each, 36 intervals ending 20 min ago. AS1 bans the messenger (tcp_ip)
    for its last 18 intervals; in AS2 one probe is offline for 12 intervals (controls fail, its targets
    say tcp_ip)."""
    rng = random.Random(5)
    first = (now - 20 * 60) - 36 * INTERVAL
    onset = first + 18.5 * INTERVAL
    out: dict[str, list[dict[str, Any]]] = {}
    for asn in ("AS1", "AS2"):
        for k in range(4):
            pid, phase = f"fe-{asn.lower()}-{k}", rng.uniform(0, INTERVAL)
            for b in range(36):
                t = first + b * INTERVAL + phase
                offline = asn == "AS2" and k == 0 and 10 <= b < 22
                blocked = asn == "AS1" and t >= onset
                out.setdefault(pid, []).append(_measurement(pid, "AA", asn, t, "control", None if offline else False))
                out[pid].append(_measurement(pid, "AA", asn, t, "messenger",
                                             "tcp_ip" if blocked or offline else False))
    return out


def _events(db: str, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert main(["collector", "events", "--db", db, "--json", *args]) == 0
    found: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return found


def upload_fleet(db: str, token: str, collectors: Start) -> tuple[float, CollectorProcess]:
    """The probes of :func:`_fleet` upload their last three hours (a backlog) to a collector that runs
    no job; returns once all of it can be read by the job's first run: the time the fleet was made,
    and that collector."""
    ingest = collectors(db, "--events-every", "0")
    now = time.time()
    for pid, items in _fleet(now).items():
        cred = enrol([ingest.url], token, probe_id=pid).credential
        reply = httpx.post(f"{ingest.url}/v1/measurements", content=upload.encode(items), timeout=30,
                           headers={"Authorization": f"Bearer {cred}", "Content-Encoding": "zstd"})
        assert reply.status_code == 200 and reply.json()["accepted"] == len(items), reply.text
    # The job reads what arrived more than 5 s ago (a batch still committing waits for the next
    # run): wait until all of it is that old, so that the first run reads the whole backlog.
    deadline = time.monotonic() + 30
    with psycopg.connect(db) as conn:
        while time.monotonic() < deadline:
            age = conn.execute("SELECT extract(epoch FROM now() - max(received_at)) FROM measurements").fetchone()
            conn.rollback()
            if age and age[0] is not None and float(age[0]) > 6:
                break
            time.sleep(0.2)
    return now, ingest


#: The events the job finds in :func:`_fleet`: (scope, network, service, type).
FLEET_EVENTS = [("asn", "AS1", "messenger", "tcp_ip"), ("cc", "AA", "messenger", "tcp_ip")]


def test_the_collector_finds_the_ban_and_not_the_offline_probe(
        db: str, token: str, collectors: Start, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now, _ = upload_fleet(db, token, collectors)
    one, two = collectors(db, "--events-every", "1"), collectors(db, "--events-every", "1")

    deadline = time.monotonic() + 60
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = _events(db, capsys)
        if {(e["asn"], e["service"]) for e in found} >= {("AS1", "messenger"), ("", "messenger")}:
            break
        time.sleep(0.5)
    keys = sorted((e["scope"], e["network"], e["service"], e["type"], e["ongoing"]) for e in found)
    assert keys == [(*key, True) for key in FLEET_EVENTS]
    ban = next(e for e in found if e["asn"] == "AS1")
    assert ban["probes"] == 4 and ban["share"] == 1.0 and ban["cc"] == "AA"
    onset = (now - 20 * 60) - 36 * INTERVAL + 18.5 * INTERVAL
    low, high = (time.mktime(time.strptime(ban[k][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
                 for k in ("start_low", "start_high"))
    assert low - 1 <= onset <= high + 1 and high - low <= INTERVAL  # bounded between measurements
    assert _events(db, capsys, "--asn", "AS2") == []  # the offline probe raised nothing
    assert [e["network"] for e in _events(db, capsys, "--asn", "AS1", "--service", "messenger")] == ["AS1"]
    assert [e["network"] for e in _events(db, capsys, "--cc", "AA", "--ongoing")] != []

    capsys.readouterr()
    assert main(["collector", "events", "--db", db, "--asn", "AS1"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 and table[1].split()[:4] == ["messenger", "AA", "AS1", "tcp_ip"]
    assert "ongoing" in table[1] and "1.00 (4/4)" in table[1]

    api = httpx.get(f"{two.url}/api/v1/events", params={"asn": "AS1"}, timeout=10).json()["events"]
    assert [e["id"] for e in api] == [ban["id"]]
    assert httpx.get(f"{two.url}/api/v1/events", params={"limit": "x"}, timeout=10).status_code == 400

    series = f'probe_fleet_event_active{{asn="AS1",cc="AA",id="{ban["id"]}",service="messenger",type="tcp_ip"}} 1.0'
    deadline = time.monotonic() + 30
    texts = ["", ""]
    while time.monotonic() < deadline:
        texts = [httpx.get(f"{c.url}/metrics", timeout=10).text for c in (one, two)]
        if all(series in text for text in texts):
            break
        time.sleep(0.5)
    assert all(series in text for text in texts), texts[0][-3000:]
    assert 'probe_fleet_event_active{asn="AS2"' not in texts[0]
    detected = [_counter(text, 'probe_fleet_events_runs_total{result="detected"}') for text in texts]
    standby = [_counter(text, 'probe_fleet_events_runs_total{result="standby"}') for text in texts]
    assert sorted(d > 0 for d in detected) == [False, True]  # one collector at a time runs the job
    assert sum(standby) > 0


def _counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} missing")


def test_measurements_without_a_verdict_do_not_stop_the_job(db: str, token: str, collectors: Start) -> None:
    """A first read whose measurements give the detector nothing (no service verdict in them: the
    network-cut test's uploads) left its clock at -inf; closing bins at -inf raised, and the job's
    task died for the collector's lifetime (seen only at shutdown). Now nothing closes and the job
    runs on."""
    ingest = collectors(db, "--events-every", "0")
    cred = enrol([ingest.url], token, probe_id="no-verdicts").credential
    items = measurements("no-verdicts", 50)
    reply = httpx.post(f"{ingest.url}/v1/measurements", content=upload.encode(items), timeout=30,
                       headers={"Authorization": f"Bearer {cred}", "Content-Encoding": "zstd"})
    assert reply.status_code == 200 and reply.json()["accepted"] == 50, reply.text
    time.sleep(6)  # older than the job's settle time (5 s), so that its first run reads them
    job = collectors(db, "--events-every", "1")
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        text = httpx.get(f"{job.url}/metrics", timeout=10).text
        if _counter_or_zero(text, 'probe_fleet_events_runs_total{result="detected"}') >= 3:
            break
        time.sleep(0.5)
    assert _counter_or_zero(text, 'probe_fleet_events_runs_total{result="detected"}') >= 3, text[-2000:]
    assert _counter_or_zero(text, 'probe_fleet_events_runs_total{result="error"}') == 0
    assert _counter_or_zero(text, "probe_fleet_events_measurements_read_total") >= 50


def _counter_or_zero(text: str, name: str) -> float:
    try:
        return _counter(text, name)
    except AssertionError:
        return 0.0
