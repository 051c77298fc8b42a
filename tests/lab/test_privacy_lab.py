"""The volunteer's address is never stored (issue 13): servers echo it everywhere, nothing keeps it.

In this lab the client's address (198.18.0.2) comes back from the network in every place the issue
found it stored: HTTP response headers (X-Client-IP, X-Forwarded-For, Set-Cookie, Location), the
page title ("Your IP address is …"), a resolver that answers with it (DNS answers, then the TCP
``input`` and the verdict's ``reason``), and a TCP target that is the client itself. ``probe run``
(its records and its OONI measurements)
and ``probe daemon`` measure that; then the store (the SQLite file's bytes and every row of every
table), the exports (JSONL, CSV and Parquet, bytes and values), ``probe show``, ``/probe`` and the
logs (both commands' stderr at debug level) are scanned: the address must occur 0 times, and the
records must carry the ``test_keys.scrubbed`` marker. The target's own addresses, which are in the
same /15, must still be there (no false scrubbing).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from probe.lab.topology import CLIENT_ADDR, HOSTS, SRV_GW

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

ECHO, LIAR, SELF = "web.telegram.test", "twitter.test", "self"
OWN = re.compile(rf"(?<![0-9]){re.escape(CLIENT_ADDR)}(?![0-9])")
PUBLIC = re.compile(rf"(?<![0-9]){re.escape(SRV_GW)}(?![0-9])")  # behind the NAT: what the servers see
LISTEN = "127.0.0.1:9899"


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    from probe.lab import Lab

    with Lab("priv" + str(os.getpid() % 1000)) as running:
        running.apply("dns_bogon", host=LIAR, answer=CLIENT_ADDR)  # the resolver answers with our own address
        yield running


def _targets(lab: Any) -> str:
    text = lab.targets_yaml([ECHO, LIAR], overrides={
        ECHO: {"ports": [443, 80], "urls": [f"https://{ECHO}/myip", f"http://{ECHO}/myip/redirect"]},
        LIAR: {"ports": [443, 80]},
    }, settings={"interval": 30, "retests": 0, "listen": LISTEN})
    data = yaml.safe_load(text)
    data["targets"].append({"name": SELF, "service": "self", "category": "test", "addresses": [CLIENT_ADDR],
                            "ports": [443], "checks": ["tcp"]})
    return yaml.safe_dump(data, sort_keys=False)


def _probe(lab: Any, *args: str) -> list[str]:
    return ["ip", "netns", "exec", lab.ns_client, sys.executable, "-m", "probe", *args]


def _count(text: str) -> int:
    return len(OWN.findall(text))


def _sqlite_rows(path: Path) -> str:
    """Every value of every row of every table, as text (the queries a reader could make)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return "\n".join(repr(row) for t in tables for row in con.execute(f'SELECT * FROM "{t}"'))  # noqa: S608
    finally:
        con.close()


def _parquet_values(path: Path) -> str:
    import pyarrow.parquet as pq

    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    return "\n".join(json.dumps(pq.read_table(f).to_pylist(), default=str) for f in files)


def _bytes(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return "\n".join(f.read_bytes().decode("latin-1") for f in files)


def _wait_for(path: Path, needle: str, count: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(errors="replace").count(needle) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{count} × {needle!r} not in {path} within {seconds} s:\n{path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def measured(lab: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Run and daemon over the echoing lab; every place a record or a log line ends up, as text."""
    work = tmp_path_factory.mktemp("privacy")
    targets = work / "targets.yaml"
    targets.write_text(_targets(lab))
    store, out, raw = work / "store.sqlite", work / "run.jsonl", work / "records.jsonl"
    found: dict[str, str] = {}
    run = subprocess.run(_probe(lab, "-v", "run", "--once", "--targets", str(targets), "--store", str(store),
                                "--out", str(out), "--records", str(raw), "--json"), capture_output=True, text=True,
                         timeout=180, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    found["run stdout (--json)"], found["run stderr (logs)"] = run.stdout, run.stderr
    found["run --records jsonl"], found["run --out jsonl (OONI)"] = raw.read_text(), out.read_text()
    table = subprocess.run(_probe(lab, "run", "--once", "--targets", str(targets), "--no-store"),
                           capture_output=True, text=True, timeout=180, check=False, env={**os.environ,
                                                                                          "COLUMNS": "400"})
    found["run stdout (table)"] = table.stdout + table.stderr

    log = work / "daemon.log"
    with open(log, "w") as err:
        daemon = subprocess.Popen(_probe(lab, "daemon", "--targets", str(targets), "--store", str(store),
                                         "--log-level", "debug"), stdout=err, stderr=err)
    try:
        _wait_for(log, '"msg": "measured"', 4, 90)
        script = ("import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("
                  f"'http://{LISTEN}/probe?target={LIAR}', timeout=60).read().decode())")
        probe = lab.exec(lab.ns_client, [sys.executable, "-c", script], timeout=90)
        found["daemon /probe"] = probe.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    found["daemon stderr (logs)"] = log.read_text()

    for name in (store, Path(f"{store}-wal"), Path(f"{store}-journal")):
        if name.exists():
            found[f"store file {name.name}"] = name.read_bytes().decode("latin-1")
    found["store rows (every table)"] = _sqlite_rows(store)
    for fmt in ("jsonl", "csv", "parquet"):
        dest = work / f"export.{fmt}"
        done = subprocess.run(_probe(lab, "export", "--store", str(store), "--out", str(dest)),
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        found[f"export {fmt} bytes"] = _bytes(dest)
        if fmt == "parquet":
            found["export parquet values"] = _parquet_values(dest)
    show = subprocess.run(_probe(lab, "show", "--store", str(store), "--json", "--limit", "1000"),
                          capture_output=True, text=True, timeout=60, check=False)
    found["show --json"] = show.stdout + show.stderr
    return found


def test_the_client_address_appears_nowhere(measured: dict[str, str]) -> None:
    counts = {place: _count(text) for place, text in measured.items()}
    print("occurrences of", CLIENT_ADDR, json.dumps(counts, indent=1))
    assert sum(counts.values()) == 0, {k: v for k, v in counts.items() if v}


def test_records_carry_the_scrubbed_marker(measured: dict[str, str]) -> None:
    records = [json.loads(line) for line in measured["run --records jsonl"].splitlines()]
    marked = {(r["target"], r["test_name"]) for r in records if (r["test_keys"].get("scrubbed") or 0) > 0}
    assert {(ECHO, "http"), (LIAR, "dns"), (LIAR, "tcp"), (LIAR, "verdict"), (SELF, "tcp")} <= marked, marked
    http = [r for r in records if r["target"] == ECHO and r["test_name"] == "http" and r["role"] == "target"]
    assert any(r["test_keys"]["title"] == "Your IP address is [scrubbed]" for r in http), http
    assert any((r["test_keys"].get("location") or "").endswith("from=[scrubbed]") for r in http), http
    for r in http:  # only the client's address went; the proxy's in X-Forwarded-For stays
        assert r["test_keys"]["headers"]["x-forwarded-for"] == "[scrubbed], 198.18.30.30"
    assert '"scrubbed":' in measured["store rows (every table)"]  # the marker is stored
    for place in ("run --out jsonl (OONI)", "export jsonl bytes", "export csv bytes", "show --json"):
        assert "[scrubbed]" in measured[place], place


def test_no_false_scrubbing_of_the_targets_own_addresses(measured: dict[str, str]) -> None:
    """The target's address is in the client's /15 and is evidence: it must still be recorded."""
    records = [json.loads(line) for line in measured["run --records jsonl"].splitlines()]
    dns = [r for r in records if r["target"] == LIAR and r["test_name"] == "dns" and r["role"] == "control"]
    assert dns and HOSTS[LIAR].address in dns[0]["test_keys"]["addresses"], dns
    assert HOSTS[ECHO].address in measured["export jsonl bytes"]


def test_behind_a_nat_the_public_address_is_learned_from_the_helper_and_scrubbed(
        lab: Any, tmp_path: Path) -> None:
    """Router 1 masquerades the client: servers see (and echo) the router's address, which is on no
    interface of the client. The probe learns it from the test helper (GET /whoami) before it measures."""
    nat = ["POSTROUTING", "-s", CLIENT_ADDR, "-o", "right", "-j", "MASQUERADE"]
    lab.exec(lab.ns_router(1), ["iptables", "-t", "nat", "-A", *nat])
    try:
        targets, store, out = tmp_path / "targets.yaml", tmp_path / "store.sqlite", tmp_path / "run.jsonl"
        raw = tmp_path / "records.jsonl"
        targets.write_text(_targets(lab))
        run = subprocess.run(_probe(lab, "-v", "run", "--once", "--targets", str(targets), "--store", str(store),
                                    "--out", str(out), "--records", str(raw), "--only", ECHO), capture_output=True,
                             text=True, timeout=180, check=False)
    finally:
        lab.exec(lab.ns_router(1), ["iptables", "-t", "nat", "-D", *nat])
    assert run.returncode == 0, run.stderr[-3000:]
    places = {"run --records jsonl": raw.read_text(), "run --out jsonl (OONI)": out.read_text(),
              "run stderr (logs)": run.stderr, "run stdout": run.stdout,
              "store file": store.read_bytes().decode("latin-1"), "store rows": _sqlite_rows(store)}
    counts = {place: len(PUBLIC.findall(text)) for place, text in places.items()}
    print("occurrences of", SRV_GW, "(the public address)", json.dumps(counts, indent=1))
    assert sum(counts.values()) == 0, counts
    records = [json.loads(line) for line in places["run --records jsonl"].splitlines()]
    http = [r for r in records if r["target"] == ECHO and r["test_name"] == "http" and r["role"] == "target"]
    assert http and all(r["test_keys"].get("scrubbed") for r in http), http
    assert all(r["test_keys"]["headers"]["x-client-ip"] == "[scrubbed]" for r in http), http
