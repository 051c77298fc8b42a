"""`probe run --once`, `probe targets validate` and --help, through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.cli import COMMANDS, main
from tests.loopback import closed_port


@pytest.fixture
def tls_server(ca, tmp_path: Path) -> Iterator[int]:
    """A TLS+HTTP server on 127.0.0.1 in a thread (the CLI runs its own event loop)."""
    import asyncio

    from tests.conftest import server_context
    from tests.loopback import Server, http_app

    ready = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        async with Server(http_app, server_context(ca, "good.test")) as server:
            holder["port"] = server.port
            holder["stop"] = stop = asyncio.Event()
            holder["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(5)
    yield int(holder["port"])  # type: ignore[call-overload]
    holder["loop"].call_soon_threadsafe(holder["stop"].set)  # type: ignore[attr-defined]
    thread.join(5)


def _targets(tmp_path: Path, ca_file: Path, port: int) -> Path:
    path = tmp_path / "targets.yaml"
    path.write_text(f"""
settings:
  ca_bundle: {ca_file}
  timeouts: {{dns: 1, connect: 1, tls: 1, http: 2}}
targets:
  - {{name: ctl, service: control, category: control, addresses: [127.0.0.1], ports: [{port}], checks: [tcp]}}
  - name: up
    service: svc
    category: messaging
    addresses: [127.0.0.1]
    sni: good.test
    ports: [{port}]
    checks: [tcp, tls, http]
    urls: ["https://good.test:{port}/"]
  - {{name: down, service: svc, category: messaging, addresses: [127.0.0.1], ports: [{closed_port()}]}}
""")
    return path


def test_run_once_writes_records_and_exits_zero_even_when_blocked(
    tmp_path: Path, ca_file: Path, tls_server: int, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jsonl"
    raw = tmp_path / "records.jsonl"
    code = main(["run", "--once", "--targets", str(_targets(tmp_path, ca_file, tls_server)), "--out", str(out),
                 "--records", str(raw), "--no-store"])
    assert code == 0
    measurements = [json.loads(line) for line in out.read_text().splitlines()]
    verdicts = {m["test_keys"]["target"]: m["test_keys"] for m in measurements}
    assert len(measurements) == len(verdicts) == 3  # one OONI measurement per target (control included)
    assert verdicts["up"]["blocking"] is False and verdicts["up"]["accessible"] is True
    assert verdicts["down"]["blocking"] == "tcp_ip"
    assert {c["check"] for m in measurements for c in m["test_keys"]["checks"]} == {"tcp", "tls", "http"}
    assert verdicts["up"]["requests"][0]["response"]["code"] == 200
    assert verdicts["down"]["tcp_connect"][0]["status"] == {"failure": "connection_refused", "success": False}
    assert all(m["test_name"] == "urlgetter" and m["probe_ip"] == "127.0.0.1" for m in measurements)
    records = [json.loads(line) for line in raw.read_text().splitlines()]  # the store's own form
    assert sorted(r["id"] for r in records if r["record_type"] == "verdict") == sorted(
        m["test_keys"]["verdict_id"] for m in measurements)
    assert all(r["measurement_start_time"].endswith("Z") for r in records)
    table = capsys.readouterr().out
    assert "up" in table and "tcp_ip" in table


def test_config_error_exits_2_naming_the_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  - {name: a, service: s, category: c, host: a.test, ports: [0]}\n")
    assert main(["run", "--once", "--targets", str(bad), "--no-store"]) == 2
    assert f"{bad}:2: targets[0].ports[0]: 0 is not a port" in capsys.readouterr().err
    assert main(["targets", "validate", str(bad)]) == 2


def test_validate_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("targets:\n  - {name: a, service: s, category: control, host: a.test}\n")
    assert main(["targets", "validate", str(good)]) == 0
    assert "OK: 1 targets (1 controls)" in capsys.readouterr().out


def test_unwritable_out_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("targets:\n  - {name: a, service: s, category: control, addresses: [127.0.0.1], "
                    f"ports: [{closed_port()}]}}\n")
    assert main(["run", "--once", "--targets", str(good), "--no-store", "--out", "/nonexistent/x.jsonl"]) == 1
    assert "cannot write /nonexistent/x.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], *[[c] for c in COMMANDS]])
def test_help_everywhere(command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "probe", *command, "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: probe" in done.stdout


def test_run_stores_records_and_reuses_probe_id(tmp_path: Path, ca_file: Path, tls_server: int) -> None:
    from probe.storage.store import Store

    targets = str(_targets(tmp_path, ca_file, tls_server))
    db = tmp_path / "s.sqlite"
    assert main(["run", "--once", "--targets", targets, "--store", str(db)]) == 0
    assert main(["run", "--once", "--targets", targets, "--store", str(db), "--only", "up"]) == 0
    with Store(db) as store:
        verdicts = list(store.query(record_type="verdict"))
    assert len(verdicts) == 3 + 2  # second run: "up" plus the control
    assert len({v["probe_id"] for v in verdicts}) == 1 and len({v["report_id"] for v in verdicts}) == 2


def test_bad_store_file_is_a_clear_error(tmp_path: Path, ca_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 1000)
    good = tmp_path / "good.yaml"
    good.write_text("targets:\n  - {name: a, service: s, category: control, host: a.test}\n")
    assert main(["run", "--once", "--targets", str(good), "--store", str(bad)]) == 1
    assert f"{bad}: not a usable SQLite store" in capsys.readouterr().err
