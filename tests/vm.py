"""Real VictoriaMetrics and vmagent processes on loopback, for the tests and the benchmarks.

``/usr/bin/victoria-metrics`` and ``/usr/bin/vmagent`` come from the Debian package
``victoria-metrics`` (scripts/test installs it). :data:`MISSING` says which binary is absent, for
a skip reason.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.service.test_daemon import free_port, wait_for

VICTORIA = "/usr/bin/victoria-metrics"
VMAGENT = "/usr/bin/vmagent"
VMALERT = "/usr/bin/vmalert"
MISSING = [b for b in (VICTORIA, VMAGENT, VMALERT) if not Path(b).exists()]
SKIP_REASON = f"needs {', '.join(MISSING)} (Debian package victoria-metrics)"


def _ready(base: str) -> bool:
    with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
        return bool(resp.status == 200)


class VictoriaMetrics:
    """A single-node VictoriaMetrics on 127.0.0.1 that can be stopped and started again on its data.

    ``-search.latencyOffset=1s``: by default the last 30 s are hidden from queries (samples may
    still be arriving), which would only slow the tests down. ``-search.disableCache``: buffered
    samples arrive late, and the rollup cache would otherwise keep answering without them.
    """

    def __init__(self, data: Path, port: int | None = None, auth: tuple[str, str] | None = None,
                 extra: Sequence[str] = ()) -> None:
        self.data, self.port, self.auth, self.extra = data, port or free_port(), auth, list(extra)
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def _open(self, url: str, data: bytes | None = None, timeout: float = 600) -> Any:
        req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
        if self.auth is not None:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            return urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as exc:  # VictoriaMetrics says why in the body
            raise AssertionError(f"{url[:200]}: HTTP {exc.code}: {exc.read()[:500]!r}") from None

    def start(self) -> VictoriaMetrics:
        self.proc = subprocess.Popen(
            [VICTORIA, f"-storageDataPath={self.data}", f"-httpListenAddr=127.0.0.1:{self.port}",
             "-retentionPeriod=100y", "-search.latencyOffset=1s", "-search.disableCache", "-loggerLevel=ERROR",
             "-search.maxUniqueTimeseries=10000000", "-search.maxSamplesPerQuery=1000000000",
             "-search.maxQueryDuration=600s",
             *([f"-httpAuth.username={self.auth[0]}", f"-httpAuth.password={self.auth[1]}"] if self.auth else []),
             *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self._open(f"{self.base}/health", timeout=2).status == 200, 30, "victoria-metrics ready")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with self._open(url) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr} if at is None else {"query": expr, "time": str(at)}
        return list(self.get("/api/v1/query", **params)["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query_range", query=expr, start=str(start), end=str(end),
                             step=f"{step}s")["result"])

    def export(self, match: str, start: float, end: float) -> list[dict[str, Any]]:
        """The raw samples (no lookback, no interpolation) of every series matching ``match``."""
        url = f"{self.base}/api/v1/export?" + urllib.parse.urlencode(
            {"match[]": match, "start": str(start), "end": str(end)})
        with self._open(url) as resp:
            return [json.loads(line) for line in resp.read().splitlines() if line.strip()]

    def import_prometheus(self, text: bytes) -> None:
        with self._open(f"{self.base}/api/v1/import/prometheus", data=text, timeout=300) as resp:
            assert resp.status == 204, resp.status

    def import_json(self, lines: list[dict[str, Any]]) -> None:
        """Series in /api/v1/export's JSON-line form: ``{"metric": {...}, "values": [...], "timestamps": [ms]}``."""
        body = "".join(json.dumps(line) + "\n" for line in lines).encode()
        with self._open(f"{self.base}/api/v1/import", data=body, timeout=300) as resp:
            assert resp.status == 204, resp.status

    def flush(self) -> None:
        """Make imported samples searchable now (they are otherwise buffered for up to a second)."""
        with self._open(f"{self.base}/internal/force_flush") as resp:
            assert resp.status == 200


def start_vmagent(args: Sequence[str], port: int) -> subprocess.Popen[bytes]:
    """vmagent with ``args`` (from probe.fleet.vmagent.vmagent_config), its own HTTP port on loopback."""
    proc = subprocess.Popen([VMAGENT, *args, "-loggerLevel=ERROR"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(lambda: _ready(f"http://127.0.0.1:{port}"), 30, "vmagent ready")
    return proc


def stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def max_gap(samples: list[dict[str, Any]], start: float, end: float) -> float:
    """The longest time without a raw sample of an exported series within [start, end] (seconds),
    the window's edges included: a series that stops early has a gap up to ``end``."""
    stamps = [start, *sorted(t / 1000 for t in samples[0]["timestamps"]), end] if samples else [start, end]
    return max(b - a for a, b in zip(stamps, stamps[1:], strict=False))
