"""The collector on a real PostgreSQL, driven by the real uploader: enrolment, idempotent ingest,
two collectors on one database, refusals (403, 400, revoked, 401, 413, 429), TLS, export, metrics."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow.parquet as pq
import pytest
import trustme
from psycopg import sql

from probe.cli import main
from probe.fleet import central, upload
from probe.fleet.enrol import config_path, enrol, load, tls_verify
from probe.fleet.localpg import Cluster, CollectorProcess, free_port
from tests.fleet.conftest import count
from tests.fleet.sources import ListSource, measurements

Start = Callable[..., CollectorProcess]
FAST = upload.Policy(batch_size=50, backoff_base_s=0.05, backoff_max_s=0.5, retry_after_max_s=2, deadline_s=60)


async def send(url: str | list[str], credential: str, source: ListSource, **kwargs: Any) -> upload.Report:
    urls = [url] if isinstance(url, str) else url
    async with upload.Uploader(urls, credential, policy=kwargs.pop("policy", FAST), **kwargs) as up:
        return await up.run(source)


def post(url: str, credential: str, items: list[dict[str, Any]], **headers: str) -> httpx.Response:
    body = upload.encode(items)
    return httpx.post(f"{url}/v1/measurements", content=body, timeout=30,
                      headers={"Authorization": f"Bearer {credential}", "Content-Encoding": "zstd", **headers})


async def test_two_probes_on_two_collectors_every_measurement_stored_once(
        db: str, token: str, collectors: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = collectors(db), collectors(db)
    # Probe A enrols with the command line (XDG_CONFIG_HOME respected), probe B with the library.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert main(["enrol", one.url, token, "--probe-id", "probe-a"]) == 0
    path = config_path()
    assert path == tmp_path / "xdg" / "probe" / "fleet.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    a = load(path)
    b = enrol([two.url], token)
    assert a.probe_id == "probe-a" and b.probe_id.startswith("probe-") and a.credential != b.credential
    with psycopg.connect(db) as conn:  # only hashes are kept
        stored = {bytes(r[0]) for r in conn.execute("SELECT credential_hash FROM probes")}
    assert stored == {central.secret_hash(a.credential), central.secret_hash(b.credential)}
    assert a.credential.encode() not in b"".join(stored)

    batch_a, batch_b = measurements(a.probe_id, 300), measurements(b.probe_id, 250)
    ra, rb = await asyncio.gather(send(one.url, a.credential, ListSource(batch_a)),
                                  send(two.url, b.credential, ListSource(batch_b)))
    assert (ra.complete, ra.accepted, ra.duplicates) == (True, 300, 0)
    assert (rb.complete, rb.accepted, rb.duplicates) == (True, 250, 0)
    assert count(db) == (550, 550)
    sent = {m["measurement_uid"] for m in batch_a + batch_b}
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT measurement_uid, probe_id, body FROM measurements").fetchall()
    found = [(str(u), p, body) for u, p, body in rows]
    assert {u for u, _, _ in found} == sent
    by_uid = {m["measurement_uid"]: m for m in batch_a + batch_b}
    assert all(body == by_uid[u] and p == by_uid[u]["probe_id"] for u, p, body in found)

    # The same batch again: all duplicates, nothing new.
    again = post(one.url, a.credential, batch_a[:50])
    assert again.status_code == 200 and again.json() == {"accepted": 0, "duplicates": 50}
    # A new batch sent to both collectors at once, several times: stored once.
    fresh = measurements(a.probe_id, 200)
    answers = await asyncio.gather(*(asyncio.to_thread(post, c.url, a.credential, fresh) for c in (one, two) * 3))
    assert [r.status_code for r in answers] == [200] * 6
    assert sum(r.json()["accepted"] for r in answers) == 200
    assert sum(r.json()["duplicates"] for r in answers) == 1000
    assert count(db) == (750, 750)


def test_another_probes_measurements_are_forbidden_and_nothing_stored(db: str, token: str, collectors: Start) -> None:
    c = collectors(db)
    a, b = enrol([c.url], token), enrol([c.url], token)
    mixed = measurements(a.probe_id, 10) + measurements(b.probe_id, 1)
    r = post(c.url, a.credential, mixed)
    assert r.status_code == 403 and r.json()["indexes"] == [10]
    assert count(db) == (0, 0)


async def test_a_bad_batch_is_refused_whole_with_each_bad_index(db: str, token: str, collectors: Start) -> None:
    c = collectors(db)
    a = enrol([c.url], token)
    items = measurements(a.probe_id, 6)
    items[1]["probe_cc"] = "Narnia"
    items[4]["measurement_uid"] = "not-a-uuid"
    items[5].pop("probe_id")  # no probe id is a bad measurement, not another probe's
    items.append(dict(items[0]))  # the same uid twice in one batch
    r = post(c.url, a.credential, items)
    assert r.status_code == 400
    assert [(e["index"], e["reason"]) for e in r.json()["errors"]] == [
        (1, "bad_probe_cc"), (4, "bad_measurement_uid"), (5, "bad_probe_id"), (6, "duplicate_in_batch")]
    assert count(db) == (0, 0)
    # The uploader sets the named ones aside and sends the rest.
    source = ListSource(items[:6])
    report = await send(c.url, a.credential, source)
    assert report.complete and report.accepted == 3 and report.rejected == 3
    assert source.rejected == {items[1]["measurement_uid"]: "bad_probe_cc", "not-a-uuid": "bad_measurement_uid",
                               items[5]["measurement_uid"]: "bad_probe_id"}
    assert count(db) == (3, 3)


async def test_a_revoked_token_refuses_its_probes(db: str, token: str, collectors: Start) -> None:
    c = collectors(db)
    a = enrol([c.url], token)
    assert (await send(c.url, a.credential, ListSource(measurements(a.probe_id, 20)))).accepted == 20
    assert main(["collector", "token", "revoke", "test-ngo", "--db", db]) == 0
    with pytest.raises(upload.UploadRefused, match="401"):
        await send(c.url, a.credential, ListSource(measurements(a.probe_id, 20)))
    with pytest.raises(Exception, match="enrolment refused"):
        enrol([c.url], token)
    assert post(c.url, "made-up", measurements(a.probe_id, 1)).status_code == 401
    assert count(db) == (20, 20)


async def test_limits_size_and_rate(db: str, token: str, collectors: Start) -> None:
    # One token per 20 s: the four requests below share a burst of 3 however slow the machine is
    # (at 0.5/s a busy machine refilled a token between them and the 429 never came).
    c = collectors(db, "--max-body", "2000", "--rate", "0.05", "--burst", "3")  # the 413 takes a token too
    a = enrol([c.url], token)
    big = post(c.url, a.credential, measurements(a.probe_id, 400))
    assert big.status_code == 413
    codes = [post(c.url, a.credential, measurements(a.probe_id, 1)) for _ in range(3)]
    assert [r.status_code for r in codes][:2] == [200, 200] and codes[2].status_code == 429
    assert 1 <= int(codes[2].headers["retry-after"]) <= 20
    # The uploader honours Retry-After: another collector of the same fleet, a token per 5 s (each
    # batch after the first waits for one, whatever the machine's speed).
    c = collectors(db, "--rate", "0.2", "--burst", "1")
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)
        await asyncio.sleep(s)

    report = await send(c.url, a.credential, ListSource(measurements(a.probe_id, 3)), sleep=sleep,
                        policy=upload.Policy(batch_size=1, retry_after_max_s=5, deadline_s=60))
    assert report.complete and report.accepted == 3 and report.errors.get("rate_limited", 0) >= 1
    assert waits and min(waits) >= 1.0  # honoured Retry-After (at least 1 s), not a hot loop


def test_gzip_jsonl_and_json_arrays_are_accepted(db: str, token: str, collectors: Start) -> None:
    c = collectors(db)
    a = enrol([c.url], token)
    items = measurements(a.probe_id, 4)
    headers = {"Authorization": f"Bearer {a.credential}"}
    lines = gzip.compress(b"".join(json.dumps(m).encode() + b"\n" for m in items[:2]))
    r1 = httpx.post(f"{c.url}/v1/measurements", content=lines, headers={**headers, "Content-Encoding": "gzip"})
    r2 = httpx.post(f"{c.url}/v1/measurements", content=json.dumps(items[2:]), headers=headers)
    r3 = httpx.post(f"{c.url}/v1/measurements", content=b"x", headers={**headers, "Content-Encoding": "br"})
    assert (r1.json(), r2.json(), r3.status_code) == ({"accepted": 2, "duplicates": 0},
                                                      {"accepted": 2, "duplicates": 0}, 415)
    metrics = httpx.get(f"{c.url}/metrics").text
    assert "probe_collector_measurements_ingested_total 4.0" in metrics
    assert 'probe_collector_batches_total{result="accepted"} 2.0' in metrics
    assert "probe_collector_in_flight_requests" in metrics and "probe_collector_db_seconds_bucket" in metrics


async def test_mirrors_in_order_and_tls(db: str, token: str, collectors: Start, tmp_path: Path,
                                        ca: trustme.CA, ca_file: Path) -> None:
    cert = ca.issue_cert("127.0.0.1")
    key_pem, chain_pem = tmp_path / "key.pem", tmp_path / "chain.pem"
    cert.private_key_pem.write_to_path(str(key_pem))
    cert.cert_chain_pems[0].write_to_path(str(chain_pem))
    proc = CollectorProcess(db, tmp_path / "tls.log", extra=["--tls-cert", str(chain_pem), "--tls-key", str(key_pem)],
                            scheme="https")
    proc.start(verify=tls_verify(str(ca_file)))
    try:
        dead = "https://127.0.0.1:9"  # nothing listens on the discard port: the first URL fails
        a = enrol([dead, proc.url], token, verify=tls_verify(str(ca_file)))
        assert a.urls == (dead, proc.url)
        report = await send(list(a.urls), a.credential, ListSource(measurements(a.probe_id, 60)),
                            verify=tls_verify(str(ca_file)))
        assert report.complete and report.accepted == 60 and report.errors["unreachable"] >= 1
        with pytest.raises(upload.UploadRefused):  # plain HTTP to a TLS port is no success either
            await send(proc.url, "wrong", ListSource(measurements(a.probe_id, 1)), verify=tls_verify(str(ca_file)))
    finally:
        proc.stop()
    assert count(db) == (60, 60)


@pytest.fixture
def socks_proxy() -> Iterator[str]:
    """microsocks on loopback (the uploader's SOCKS5 support; a local Tor looks the same to it)."""
    if not os.path.exists("/usr/bin/microsocks"):
        pytest.skip("microsocks not installed (apt-get install microsocks)")
    port = free_port()
    socks = subprocess.Popen(["/usr/bin/microsocks", "-i", "127.0.0.1", "-p", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):  # until it listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"socks5://127.0.0.1:{port}"
    finally:
        socks.terminate()
        socks.wait(timeout=10)


async def test_upload_through_a_socks5_proxy(db: str, token: str, collectors: Start, socks_proxy: str) -> None:
    c = collectors(db)
    a = enrol([c.url], token, proxy=socks_proxy)
    assert a.proxy == socks_proxy
    report = await send(c.url, a.credential, ListSource(measurements(a.probe_id, 30)), proxy=socks_proxy)
    assert report.complete and report.accepted == 30


def test_client_address_is_never_stored_or_logged(db: str, token: str, collectors: Start, tmp_path: Path,
                                                  cluster: Cluster) -> None:
    log = tmp_path / "collector.log"
    c = collectors(db, log=log)
    client_ip, forwarded = "127.0.0.77", "198.18.99.77"
    transport = httpx.HTTPTransport(local_address=client_ip)
    with httpx.Client(transport=transport, timeout=30, headers={"X-Forwarded-For": forwarded,
                                                                "X-Real-IP": forwarded}) as client:
        cred = client.post(f"{c.url}/v1/enrol", json={"token": token}).json()
        probe_id, auth = cred["probe_id"], {"Authorization": f"Bearer {cred['credential']}"}
        items = measurements(probe_id, 20)
        body = b"".join(json.dumps(m).encode() + b"\n" for m in items)
        assert client.post(f"{c.url}/v1/measurements", headers=auth, content=body).status_code == 200
        assert client.post(f"{c.url}/v1/measurements", headers=auth, content=b"{").status_code == 400
        assert client.post(f"{c.url}/v1/measurements", content=body).status_code == 401
        assert client.get(f"{c.url}/nowhere").status_code == 404
        assert client.post(f"{c.url}/v1/enrol", json={"token": "bad"}).status_code == 401
    c.stop()
    dump = subprocess.run([str(cluster.bin / "pg_dump"), db], capture_output=True, text=True, check=True).stdout
    assert probe_id in dump and items[0]["measurement_uid"] in dump  # the scan sees what is there
    texts = {"database": dump, "collector log": log.read_text(), "postgres log": cluster.log.read_text()}
    assert "Started server process" in texts["collector log"]
    for where, text in texts.items():
        for address in (client_ip, forwarded):
            assert address not in text, f"{address} found in the {where}"


def test_export_jsonl_and_parquet_with_filters(db: str, token: str, collectors: Start, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    c = collectors(db)
    a = enrol([c.url], token)
    ru = measurements(a.probe_id, 30, cc="RU", asn="AS12389", service="telegram")
    ir = measurements(a.probe_id, 20, cc="IR", asn="AS58224", service="whatsapp")
    assert post(c.url, a.credential, ru + ir).status_code == 200
    out = tmp_path / "ru.jsonl"
    assert main(["collector", "export", "--db", db, "--since", "1d", "--cc", "RU", "--out", str(out)]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(m["measurement_uid"] for m in got) == sorted(m["measurement_uid"] for m in ru)
    assert got[0] == next(m for m in ru if m["measurement_uid"] == got[0]["measurement_uid"])
    pq_out = tmp_path / "all.parquet"
    assert main(["collector", "export", "--db", db, "--since", "1d", "--format", "parquet", "--out", str(pq_out),
                 "--service", "whatsapp", "--asn", "AS58224"]) == 0
    table = pq.read_table(pq_out)
    assert table.num_rows == 20 and set(table.column("probe_cc").to_pylist()) == {"IR"}
    assert main(["collector", "export", "--db", db, "--since", "2099-01-01", "--out", str(out)]) == 0
    assert out.read_text() == ""
    capsys.readouterr()


def test_partitions_ahead_and_retention_drops_whole_days(db: str) -> None:
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date()
    with psycopg.connect(db, autocommit=True) as conn:
        central.ensure_partitions(conn, [today - dt.timedelta(days=k) for k in (40, 10)])
        assert central.partitions(conn)[:2] == [today - dt.timedelta(days=40), today - dt.timedelta(days=10)]
        assert central.migrate(conn) == []  # idempotent
        assert central.drop_older(conn, keep_days=30) == [today - dt.timedelta(days=40)]
        assert today - dt.timedelta(days=40) not in central.partitions(conn)
        assert {today, today + dt.timedelta(days=1), today + dt.timedelta(days=2)} <= set(central.partitions(conn))


def test_a_partition_dropped_under_a_running_collector_is_made_again(db: str, token: str, collectors: Start) -> None:
    import datetime as dt

    c = collectors(db)
    a = enrol([c.url], token)
    assert post(c.url, a.credential, measurements(a.probe_id, 5)).status_code == 200
    with psycopg.connect(db, autocommit=True) as conn:
        today = central.partition_name(dt.datetime.now(dt.UTC).date())
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(today)))
    r = post(c.url, a.credential, measurements(a.probe_id, 5))
    assert (r.status_code, r.json()) == (200, {"accepted": 5, "duplicates": 0})
    assert count(db) == (5, 5)


def test_the_command_line_round_trip(db: str, collectors: Start, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_COLLECTOR_DB", db)
    assert main(["collector", "migrate"]) == 0
    assert "schema up to date" in capsys.readouterr().out
    assert main(["collector", "token", "create", "--label", "cli-group"]) == 0
    token = capsys.readouterr().out.strip()
    c = collectors(db)
    config = tmp_path / "fleet.json"
    assert main(["enrol", c.url, token, "--config", str(config), "--probe-id", "cli-probe"]) == 0
    assert main(["enrol", c.url, token, "--config", str(config)]) == 2  # already enrolled: no silent replace
    # --metrics-url also writes this probe's vmagent configuration, labelled with its id, country and ASN
    targets = tmp_path / "targets.yaml"
    targets.write_text("settings: {probe_cc: RU, probe_asn: AS12389}\ntargets:\n"
                       "  - {name: t, service: s, category: c, addresses: [127.0.0.1], checks: [tcp]}\n")
    secret = tmp_path / "vm-password"
    secret.write_text("s3cret\n")
    capsys.readouterr()
    assert main(["enrol", c.url, token, "--config", str(tmp_path / "fleet2.json"), "--probe-id", "cli-probe-2",
                 "--targets", str(targets), "--metrics-url", "http://127.0.0.1:8428/api/v1/write",
                 "--metrics-user", "fleet", "--metrics-password-file", str(secret),
                 "--vmagent-dir", str(tmp_path / "vmagent")]) == 0
    env = (tmp_path / "vmagent" / "vmagent.env").read_text()
    assert all(f in env for f in ("-remoteWrite.label=probe=cli-probe-2", "-remoteWrite.label=cc=RU",
                                  "-remoteWrite.label=asn=AS12389", "-remoteWrite.url=http://127.0.0.1:8428"))
    assert "s3cret" not in env and "vmagent configuration in" in capsys.readouterr().out
    items = measurements("cli-probe", 120)
    items[7]["probe_asn"] = "7"
    source = tmp_path / "m.jsonl"
    source.write_text("".join(json.dumps(m) + "\n" for m in items))
    capsys.readouterr()
    assert main(["upload", "--from", str(source), "--config", str(config), "--batch", "50"]) == 0
    assert "sent 119 (new 119, already there 0), rejected 1" in capsys.readouterr().out
    assert len((tmp_path / "m.jsonl.uploaded").read_text().split()) == 119
    assert "bad_probe_asn" in (tmp_path / "m.jsonl.rejected").read_text()
    assert main(["upload", "--from", str(source), "--config", str(config)]) == 0
    assert "sent 0 " in capsys.readouterr().out
    assert main(["collector", "token", "list"]) == 0
    listing = capsys.readouterr().out
    assert "cli-group" in listing and token not in listing
    assert count(db) == (119, 119)
