"""The status page and the report in a real browser (Debian's headless Chromium).

A real ``probe daemon`` measures five targets whose states a measure function decides
(:func:`states_measure`): accessible, blocked (an event that stays open), throttled (throughput
against its control), an outage (inconclusive), and one accessible, blocked for a few runs, then
accessible again (an event that closes). Chromium loads ``/`` and the ``probe report`` file; the tests
assert what the DOM shows, take screenshots at desktop (1280x900) and phone (390x844) widths,
and check in Chromium's network log that no request went anywhere but 127.0.0.1.
``PROBE_UPDATE_SCREENSHOTS=1`` also writes the screenshots to docs/img/ (the README shows them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from probe.analysis.verdict import Controls
from probe.core.config import Target
from probe.core.context import Context
from probe.core.records import CheckResult, Verdict
from probe.pipeline import TargetOutcome
from probe.storage.store import Store
from tests.service.test_daemon import FakeDetails, free_port, stop, wait_for

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/test installs it)")

FLIP = range(3, 8)  # the runs in which the flipping target is blocked (accessible before and after): an event that ends


@dataclass(frozen=True)
class Rate:
    rate_bytes_per_second: float


RUNS: dict[str, int] = {}


async def states_measure(target: Target, ctx: Context, controls: Controls) -> TargetOutcome:
    """``options.state``: ok, blocked, throttled, outage or flip (ok, blocked in the runs FLIP, ok again)."""
    RUNS[target.name] = RUNS.get(target.name, 0) + 1
    state = str(target.options.get("state", "ok"))
    if state == "flip":
        state = "blocked" if RUNS[target.name] in FLIP else "ok"
    start = ctx.clock()
    ok = state in ("ok", "throttled")
    failure = {"blocked": "connection_reset", "outage": "generic_timeout_error"}.get(state)
    tcp = CheckResult(check="tcp", target=target.name, input="127.0.0.1:443", ok=ok, failure=failure,
                      failed_operation=None if ok else "connect", start_time=start, runtime=0.01,
                      details=FakeDetails("127.0.0.1", 443), timings={"connect": 0.01})
    results: list[CheckResult[Any]] = [tcp]
    if state == "throttled":
        for role, rate in (("target", 16_000.0 + 1000 * RUNS[target.name] % 3), ("control", 1_250_000.0)):
            results.append(CheckResult(check="throughput", target=target.name, input="loopback", ok=True,
                                       failure=None, failed_operation=None, start_time=start, runtime=1.0,
                                       details=Rate(rate), role=role))  # type: ignore[arg-type]
    blocking: str | bool | None = {"ok": False, "blocked": "tcp_ip", "throttled": "throttling", "outage": None}[state]
    reason = {"ok": "every check answered", "blocked": "TCP connect to 127.0.0.1:443 was reset; the control answers",
              "throttled": "transfer at 128 kbit/s while the control reaches 10 Mbit/s",
              "outage": "the target and its control both failed: an outage, not censorship"}[state]
    verdict = Verdict(target=target.name, service=target.service, category=target.category,
                      accessible=None if state == "outage" else state != "blocked", blocking=blocking,
                      rule=state, reason=reason, start_time=start, evidence=(tcp.id,), failure=failure)
    return TargetOutcome(target, tuple(results), verdict)


TARGETS = """\
settings: {{interval: 1, jitter: 0, retests: 0, concurrency: 8, store: {store}, probe_cc: RU, probe_asn: AS64500}}
targets:
  - {{name: whatsapp-web, service: whatsapp, category: messaging, addresses: [127.0.0.1], checks: [tcp]}}
  - {{name: telegram-dc2, service: telegram, category: messaging, addresses: [127.0.0.1], checks: [tcp],
      options: {{state: blocked}}}}
  - {{name: twitter-media, service: twitter, category: social, addresses: [127.0.0.1], checks: [tcp],
      options: {{state: throttled}}}}
  - {{name: signal-cdn, service: signal, category: messaging, addresses: [127.0.0.1], checks: [tcp],
      options: {{state: outage}}}}
  - {{name: telegram-web, service: telegram, category: messaging, addresses: [127.0.0.1], checks: [tcp],
      options: {{state: flip}}}}
"""


class DOM(HTMLParser):
    """The elements with data-* attributes Chromium's serialised DOM has, with their text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: dict[str, str] = {}  # target -> state
        self.events: list[tuple[str, str]] = []  # (target, ongoing)
        self.figures: list[str] = []
        self.health: dict[str, str] = {}
        self.svgs = 0
        self._health: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-state" in a:
            self.rows[a["data-target"]] = a["data-state"]
        elif tag == "tr" and "data-ongoing" in a:
            self.events.append((a["data-target"], a["data-ongoing"]))
        elif tag == "figure":
            self.figures.append(a["data-target"])
        elif tag == "svg":
            self.svgs += 1
        elif tag == "dd":
            self._health = a.get("data-health")

    def handle_data(self, data: str) -> None:
        if self._health:
            self.health[self._health] = self.health.get(self._health, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "dd":
            self._health = None


def chromium(*args: str, netlog: Path | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="probe-chromium-") as profile:
        argv = [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
                *([f"--log-net-log={netlog}"] if netlog else []), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def page_requests(netlog: Path) -> list[str]:
    """The URLs the page asked for, from Chromium's net log (``--log-net-log``).

    A request of the page is its main frame or carries the page's site as its network isolation key;
    the browser's own background requests (component updates, time, accounts) are ``other`` with no
    such key: they are the browser's, and the host resolver rules send them nowhere anyway.
    """
    text = netlog.read_text(errors="replace")
    log, _ = json.JSONDecoder().raw_decode(text)  # Chromium may leave a trailing fragment
    names = {value: name for name, value in log["constants"]["logEventTypes"].items()}
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if names.get(event["type"]) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        key = str(params.get("network_isolation_key", ""))
        if params.get("request_type") != "other" or "127.0.0.1" in key or "file" in key:
            urls.append(str(params["url"]))
    return urls


def foreign(urls: list[str]) -> list[str]:
    return [u for u in urls if urlsplit(u).hostname != "127.0.0.1" and urlsplit(u).scheme != "file"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def screenshot(url: str, out: Path, width: int, height: int, *, docs: bool = True) -> None:
    chromium("--hide-scrollbars", f"--window-size={width},{height}", f"--screenshot={out}", url)
    assert png_size(out) == (width, height)
    if docs and os.environ.get("PROBE_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(out, ROOT / "docs" / "img" / out.name)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    tmp = tmp_path_factory.mktemp("status")
    store, targets, port = tmp / "probe.sqlite", tmp / "targets.yaml", free_port()
    targets.write_text(TARGETS.format(store=store))
    argv = [sys.executable, "-m", "probe", "daemon", "--targets", str(targets), "--listen", f"127.0.0.1:{port}",
            "--measure", "tests.service.test_status_browser:states_measure", "--log-format", "json"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        def both_events() -> bool:  # an ongoing event and an ended one, flushed to the store
            try:
                page = DOM(fetch(port, "/")[2])
            except OSError:
                return False
            return ("telegram-dc2", "true") in page.events and ("telegram-web", "false") in page.events
        wait_for(both_events, 60, "an open and a closed event on the status page")
        yield port, store
    finally:
        stop(proc)


def fetch(port: int, path: str) -> tuple[int, dict[str, str], str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return answer.status, dict(answer.headers), answer.read().decode()


def test_status_page_in_chromium_shows_each_state_events_and_plots(daemon: tuple[int, Path], tmp_path: Path) -> None:
    port, _ = daemon
    status, headers, _ = fetch(port, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none': no script at all
    netlog = tmp_path / "netlog.json"
    page = DOM(chromium("--dump-dom", f"http://127.0.0.1:{port}/", netlog=netlog))
    assert page.rows == {"whatsapp-web": "accessible", "telegram-dc2": "blocked", "twitter-media": "throttled",
                         "signal-cdn": "outage", "telegram-web": "accessible"}
    assert ("telegram-dc2", "true") in page.events and ("telegram-web", "false") in page.events
    assert page.figures == ["twitter-media"] and page.svgs >= 2  # the time line and the throughput plot
    assert page.health["upload"] == "off (not configured)"
    assert page.health["store size"].endswith(("kB", "MB"))
    assert page_requests(netlog) == [f"http://127.0.0.1:{port}/"]  # the document, and nothing else
    for name, (width, height) in {"status-desktop.png": (1280, 900), "status-phone.png": (390, 844)}.items():
        screenshot(f"http://127.0.0.1:{port}/", tmp_path / name, width, height)


def test_the_page_says_the_state_in_words_and_shows_no_address(daemon: tuple[int, Path]) -> None:
    port, _ = daemon
    _, _, text = fetch(port, "/")
    assert "blocked (tcp_ip)" in text and "128 kbit/s vs 10.0 Mbit/s control" in text
    assert "127.0.0.1" not in text  # the reasons named it: scrubbed
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text)  # nothing loaded from anywhere


def test_report_is_one_self_contained_file_without_address_or_probe_id(daemon: tuple[int, Path],
                                                                      tmp_path: Path) -> None:
    _, store = daemon
    out = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "probe", "report", "--store", str(store), "--since", "1h",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert '<meta http-equiv="Content-Security-Policy"' in text and "<script" not in text
    with Store(store, readonly=True) as opened:
        probe_id = opened.probe_id(None)
    assert "127.0.0.1" not in text and probe_id not in text
    netlog = tmp_path / "netlog.json"
    page = DOM(chromium("--dump-dom", out.as_uri(), netlog=netlog))
    assert page.rows["telegram-dc2"] == "blocked" and page.rows["twitter-media"] == "throttled"
    assert ("telegram-web", "false") in page.events and page.figures == ["twitter-media"]
    assert foreign(page_requests(netlog)) == []
    screenshot(out.as_uri(), tmp_path / "report-phone.png", 390, 844, docs=False)
