"""Upload from the local store (issue 16): two probes measured with `probe run --once`, enrolled
with `probe enrol` under their store's probe id, uploaded with `probe upload` through the cursor,
against a real collector on a real PostgreSQL; the collector down, the credential revoked, and
`probe upload` killed with SIGKILL in the middle."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from probe.cli import main
from probe.fleet import central
from probe.fleet.localpg import CollectorProcess
from probe.storage.store import Store
from tests.fleet.conftest import count
from tests.loopback import closed_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port that accepts (the kernel completes the handshake; nobody needs to answer)."""
    with socket.create_server(("127.0.0.1", 0), backlog=512) as server:
        yield server.getsockname()[1]


def _measure(home: Path, port: int, runs: int) -> Path:
    """``runs`` rounds of `probe run --once` into the store under ``home``: 2 measurements each."""
    targets = home / "targets.yaml"
    home.mkdir(exist_ok=True)
    targets.write_text(f"""
settings:
  timeouts: {{dns: 1, connect: 1, tls: 1, http: 2}}
targets:
  - {{name: up, service: svc, category: messaging, addresses: [127.0.0.1], ports: [{port}], checks: [tcp]}}
  - {{name: down, service: svc, category: messaging, addresses: [127.0.0.1], ports: [{closed_port()}], checks: [tcp]}}
""")
    store = home / "store.sqlite"
    for _ in range(runs):
        assert main(["run", "--once", "--targets", str(targets), "--store", str(store)]) == 0
    return store


def _verdicts(store: Path) -> set[str]:
    with Store(store, readonly=True) as s:
        return {str(r["id"]) for r in s.query(record_type="verdict")}


def _stored(dsn: str) -> list[dict[str, object]]:
    with psycopg.connect(dsn) as conn:
        return [json.loads(body) if isinstance(body, str) else body
                for (body,) in conn.execute("SELECT body FROM measurements").fetchall()]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "probe", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_two_probes_every_measurement_once_through_the_cursor(
    tmp_path: Path, db: str, token: str, collectors: Callable[..., CollectorProcess], listener: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    c = collectors(db)
    homes = {}
    for name in ("a", "b"):
        home = tmp_path / name
        store = _measure(home, listener, 3)
        conf = home / "fleet.json"
        assert main(["enrol", c.url, token, "--store", str(store), "--config", str(conf)]) == 0
        with Store(store, readonly=True) as s:
            assert json.loads(conf.read_text())["probe_id"] == s.probe_id(None)  # one probe id
        homes[name] = (store, conf)
    capsys.readouterr()
    for store, conf in homes.values():
        assert main(["upload", "--store", str(store), "--config", str(conf), "--batch", "4"]) == 0
        assert "sent 6 " in capsys.readouterr().out
    stored = _stored(db)
    uids = [m["measurement_uid"] for m in stored]
    verdicts = set().union(*(_verdicts(s) for s, _ in homes.values()))
    assert len(stored) == len(set(uids)) == len(verdicts) == 12  # every run, exactly once
    assert {m["test_keys"]["verdict_id"] for m in stored} == verdicts  # type: ignore[index]
    # the same conversion as `probe export --format jsonl`
    store_a, conf_a = homes["a"]
    out = tmp_path / "a.jsonl"
    assert main(["export", "--store", str(store_a), "--out", str(out)]) == 0
    exported = {m["measurement_uid"]: m for m in map(json.loads, out.read_text().splitlines())}
    assert all(exported[m["measurement_uid"]] == m for m in stored if m["measurement_uid"] in exported)
    assert len(exported) == 6
    # nothing more to send: the cursor is past everything
    capsys.readouterr()
    assert main(["upload", "--store", str(store_a), "--config", str(conf_a)]) == 0
    assert "sent 0 " in capsys.readouterr().out
    # a new run is pending, then uploaded alone
    _measure(tmp_path / "a", listener, 1)
    assert main(["status", "--store", str(store_a), "--config", str(conf_a)]) == 0
    assert "pending: 2 measurement(s)" in capsys.readouterr().out
    assert main(["upload", "--store", str(store_a), "--config", str(conf_a)]) == 0
    assert count(db) == (14, 14)


def test_collector_down_then_up_and_revoked_in_words(
    tmp_path: Path, db: str, token: str, collectors: Callable[..., CollectorProcess], listener: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    c = collectors(db)
    store = _measure(tmp_path / "p", listener, 2)
    conf = tmp_path / "fleet.json"
    assert main(["enrol", c.url, token, "--store", str(store), "--config", str(conf)]) == 0
    c.stop()
    _measure(tmp_path / "p", listener, 2)  # measured while the collector is down
    capsys.readouterr()
    assert main(["upload", "--store", str(store), "--config", str(conf), "--deadline", "1", "--timeout", "1"]) == 1
    assert "cannot reach the collector" in capsys.readouterr().err
    assert main(["status", "--store", str(store), "--config", str(conf)]) == 1
    said = capsys.readouterr().out
    assert "pending: 8 measurement(s)" in said and "last success: never" in said
    assert "cannot reach the collector" in said
    assert count(db) == (0, 0)
    c.start()  # up again, same URL
    assert main(["upload", "--store", str(store), "--config", str(conf)]) == 0
    assert count(db) == (8, 8)  # 0 lost, 0 duplicated
    assert main(["status", "--store", str(store), "--config", str(conf)]) == 0
    assert "last error: none" in capsys.readouterr().out
    # the credential revoked: refused, and said in words
    with psycopg.connect(db, autocommit=True) as conn:
        central.revoke_token(conn, "test-ngo")
    _measure(tmp_path / "p", listener, 1)
    capsys.readouterr()
    assert main(["upload", "--store", str(store), "--config", str(conf)]) == 3
    assert "refused the credential (401)" in capsys.readouterr().err
    assert main(["status", "--store", str(store), "--config", str(conf)]) == 1
    said = capsys.readouterr().out
    assert "refused the credential (401)" in said and "enrol again" in said and "pending: 2 " in said
    with Store(store, readonly=True) as s:
        status = json.loads(s.meta("upload_status") or "{}")
    assert status["errors"]["unauthorized"] == 1 and status["errors"]["unreachable"] >= 1


def test_sigkill_mid_upload_nothing_lost_nothing_twice(
    tmp_path: Path, db: str, token: str, collectors: Callable[..., CollectorProcess], listener: int,
) -> None:
    # 2 batches a second: the upload takes seconds, so the kill lands in the middle
    c = collectors(db, "--rate", "2", "--burst", "1")
    store = _measure(tmp_path / "p", listener, 10)
    conf = tmp_path / "fleet.json"
    assert main(["enrol", c.url, token, "--store", str(store), "--config", str(conf)]) == 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "probe", "upload", "--store", str(store), "--config", str(conf),
                             "--batch", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while count(db)[0] < 4 and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL  # killed mid-upload, not finished
    before = count(db)[0]
    assert 4 <= before < 20
    with Store(store, readonly=True) as s:
        assert s.pending_runs() >= 20 - before  # the cursor never runs ahead of the acknowledgement
    done = _cli("upload", "--store", str(store), "--config", str(conf), "--batch", "5")
    assert done.returncode == 0, done.stderr
    stored, distinct = count(db)
    print(f"SIGKILL after {before} stored: sent 20, stored {stored}, twice {stored - distinct}, "
          f"lost {20 - distinct}; second run: {done.stdout.strip()}")
    assert (stored, distinct) == (20, 20)


def test_retention_keeps_what_is_not_uploaded(tmp_path: Path) -> None:
    from tests.storage.test_store import T0, make_records

    day = 86400.0
    with Store(tmp_path / "s.sqlite", retention_days=1, upload_bound_days=30, clock=lambda: T0) as store:
        store.append(make_records(4, t0=T0, step=day))  # runs on days 0..3
        store.flush()
        runs = store.runs_after(0, 10)
        assert [len(r) for _, r in runs] == [3, 3, 3, 3]
        assert store.pending_runs() == 4
        assert store.prune(now=T0 + 10 * day) == 0  # nothing uploaded: nothing deleted
        store.set_meta({"upload_seq": str(runs[1][0])})  # the first two acknowledged
        assert store.prune(now=T0 + 10 * day) == 6
        assert store.pending_runs() == 2 and store.meta("upload_expired") is None
        assert store.prune(now=T0 + 40 * day) == 6  # past the bound: deleted, and counted
        assert store.meta("upload_expired") == "2" and store.count() == 0


def _metric(port: int, name: str) -> float:
    from tests.service.test_daemon import scrape

    lines = [ln for ln in scrape(port).splitlines() if ln.startswith(name + " ") or ln.startswith(name + "{")]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)


def test_two_daemons_upload_through_an_outage(
    tmp_path: Path, db: str, token: str, collectors: Callable[..., CollectorProcess],
) -> None:
    from tests.service.test_daemon import free_port, targets_yaml, wait_for

    c = collectors(db)
    procs, stores, ports = [], [], []
    for name in ("a", "b"):
        home = tmp_path / name
        home.mkdir()
        store, conf = home / "store.sqlite", home / "fleet.json"
        targets = home / "targets.yaml"
        targets.write_text(targets_yaml(["t1", "t2"], interval=1.0, settings=(
            f", upload: {{enabled: true, interval: 1, credential: {conf}}}")))
        assert main(["enrol", c.url, token, "--store", str(store), "--config", str(conf)]) == 0
        stores.append(store)
        ports.append(free_port())
    c.stop()  # the collector is down while the daemons measure
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PROBE_INFORMED_CONSENT": "1"}
    try:
        for store, port in zip(stores, ports, strict=True):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "probe", "daemon", "--targets", str(store.parent / "targets.yaml"),
                 "--store", str(store), "--listen", f"127.0.0.1:{port}", "--grace", "2",
                 "--measure", "tests.service.test_daemon:fake_measure"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(store.parent / "daemon.log").open("wb"), env=env))
        for port in ports:
            wait_for(lambda p=port: _metric(p, 'probe_upload_errors_total{reason="unreachable"}') > 0
                     and _metric(p, "probe_upload_pending") >= 4, 60, "the outage counted, runs pending")
            assert _metric(port, "probe_upload_last_success_timestamp_seconds") == 0
        c.start()
        for port in ports:
            wait_for(lambda p=port: _metric(p, "probe_upload_last_success_timestamp_seconds") > 0, 60,
                     "an upload after the outage")
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    for store in stores:  # what the daemons measured after their last round
        done = _cli("upload", "--store", str(store), "--config", str(store.parent / "fleet.json"))
        assert done.returncode == 0, done.stderr
    verdicts = set().union(*(_verdicts(s) for s in stores))
    stored = _stored(db)
    print(f"two daemons through an outage: measured {len(verdicts)}, stored {len(stored)}, "
          f"twice {len(stored) - len({m['measurement_uid'] for m in stored})}")
    assert len(stored) == len({m["measurement_uid"] for m in stored}) == len(verdicts)
    assert {m["test_keys"]["verdict_id"] for m in stored} == verdicts  # type: ignore[index]
    # the collector's own reachability, measured like any target (service fleet), uploaded too
    assert {"collector"} <= {m["test_keys"]["target"] for m in stored}  # type: ignore[index]


def test_upload_settings_validated_with_file_and_line() -> None:
    from probe.core.config import ConfigError, load_text

    good = load_text("settings:\n  upload: {enabled: true, urls: [https://c.example/], proxy: socks5://127.0.0.1:9050,"
                     " batch_size: 100}\ntargets:\n  - {name: a, service: s, category: c, host: a.test}\n", "t.yaml")
    assert good.settings.upload.enabled and good.settings.upload.urls == ("https://c.example/",)
    assert good.settings.upload.batch_size == 100 and good.settings.upload.max_pending_days == 30
    for bad, said in (("upload: {enabled: yes please}", "t.yaml:2"), ("upload: {proxy: ftp://x}", "socks5://"),
                      ("upload: {batch: 3}", "unknown key 'batch'"), ("upload: {urls: [c.example]}", "http")):
        with pytest.raises(ConfigError) as caught:
            load_text(f"settings:\n  {bad}\ntargets:\n  - {{name: a, service: s, category: c, host: a.test}}\n",
                      "t.yaml")
        assert said in str(caught.value) and "t.yaml:2" in str(caught.value)


async def test_the_collector_serves_the_test_helper_and_an_enrolled_probe_uses_it(
    tmp_path: Path, db: str, token: str, collectors: Callable[..., CollectorProcess], listener: int,
) -> None:
    import httpx

    from probe.checks.control import ask
    from probe.core.config import load_text
    from probe.core.context import Context
    from probe.core.records import ProbeMeta
    from probe.fleet.enrol import enrol, save
    from probe.fleet.vantage import amend

    c = collectors(db, "--helper-concurrency", "4")
    enrolment = enrol([c.url], token)
    assert enrolment.test_helper == f"{c.url}/helper"
    conf = tmp_path / "fleet.json"
    save(enrolment, conf)
    cfg = load_text(f"settings: {{upload: {{enabled: true, credential: {conf}}}}}\n"
                    "targets:\n  - {name: a, service: s, category: c, host: a.test}\n")
    amended = amend(cfg)
    settings = amended.settings
    assert settings.test_helper == enrolment.test_helper  # the enrolled collector is the control vantage
    collector = amended.targets[-1]  # and its reachability is measured like any target
    assert (collector.name, collector.service, collector.addresses) == ("collector", "fleet", ("127.0.0.1",))
    assert collector.checks == ("tcp", "http") and collector.urls == (f"{c.url}/healthz",)
    from probe.pipeline import measure_target

    reached = await measure_target(collector, Context(settings=cfg.settings, meta=ProbeMeta(probe_id="p")))
    assert reached.verdict.accessible is True, reached.verdict
    assert {r.check for r in reached.results} >= {"tcp", "http"}
    ctx = Context(settings=settings, meta=ProbeMeta(probe_id="p"))
    up = await ask(settings.test_helper, "127.0.0.1", listener, None, ctx, target="t")
    down = await ask(settings.test_helper, "127.0.0.1", closed_port(), None, ctx, target="t")
    assert up.ok and up.details.tcp_ok is True
    assert down.ok and down.details.tcp_ok is False and down.details.tcp_failure == "connection_refused"
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{c.url}/helper/whoami")).json() == {"client": "127.0.0.1"}
        assert (await client.post(f"{c.url}/helper/check", content=b"x" * 9000)).status_code == 413
        assert (await client.post(f"{c.url}/helper/check", json={"address": "127.0.0.1"})).status_code == 400
        assert (await client.get(f"{c.url}/helper/nothing")).status_code == 404
    # the helper's requests are neither stored nor logged (no access log)
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM measurements").fetchone() == (0,)
    assert "/helper" not in c.log.read_text()


def test_a_crash_between_the_ack_and_the_cursor_resends_as_duplicates(
    tmp_path: Path, db: str, token: str, collectors: Callable[..., CollectorProcess], listener: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from probe.fleet import queue
    from probe.fleet.enrol import enrol
    from probe.fleet.upload import Policy

    c = collectors(db)
    store = _measure(tmp_path / "p", listener, 3)
    with Store(store) as s:
        enrolment = enrol([c.url], token, probe_id=s.probe_id(None))
    real = queue.StoreSource.mark_uploaded

    def crash(self: queue.StoreSource, keys: object) -> None:
        raise RuntimeError("killed after the collector's commit, before the cursor's")

    monkeypatch.setattr(queue.StoreSource, "mark_uploaded", crash)
    with pytest.raises(RuntimeError, match="before the cursor"):
        queue.upload_round(store, enrolment, Policy(batch_size=4))
    assert count(db) == (4, 4)  # the collector stored the first batch; the cursor did not move
    with Store(store, readonly=True) as s:
        assert s.upload_cursor() == 0 and s.pending_runs() == 6
    monkeypatch.setattr(queue.StoreSource, "mark_uploaded", real)
    done = queue.upload_round(store, enrolment, Policy(batch_size=4))
    assert (done.report.sent, done.report.accepted, done.report.duplicates) == (6, 2, 4)
    assert done.pending == 0 and count(db) == (6, 6)  # sent again, stored once
