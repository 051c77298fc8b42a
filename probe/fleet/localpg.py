"""Throwaway PostgreSQL clusters and collector processes on loopback: for tests, benchmarks, demos.

:class:`Cluster` runs ``initdb``/``pg_ctl`` from Debian's ``/usr/lib/postgresql/<v>/bin`` in a
temporary directory; as root it runs them as the ``postgres`` user (PostgreSQL refuses root).
It listens on 127.0.0.1 only, with trust authentication: never use it for real data.
:class:`CollectorProcess` runs ``probe collector serve`` as a child process, logging to a file.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psycopg
from psycopg import sql


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (with initdb), if any."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return candidates[-1].parent if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    def __init__(self, *, fast: bool = True) -> None:
        found = pg_bin()
        if found is None:
            raise FileNotFoundError("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")
        self.bin = found
        self.dir = Path(tempfile.mkdtemp(prefix="probe-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.fast = fast
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bin / tool), *args]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-2000:]}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if self.fast:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class CollectorProcess:
    """``probe collector serve`` in a child process on 127.0.0.1; its output goes to ``log``."""

    def __init__(self, dsn: str, log: Path, *, port: int | None = None, extra: Sequence[str] = (),
                 scheme: str = "http") -> None:
        self.dsn = dsn
        self.log = log
        self.port = port or free_port()
        self.extra = list(extra)
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, verify: ssl.SSLContext | bool = True, timeout_s: float = 30.0) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "probe", "collector", "serve", "--db", self.dsn,
                 "--listen", f"127.0.0.1:{self.port}", *self.extra],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        try:
            self._wait_ready(verify, timeout_s)
        except BaseException:
            self.stop()  # never leave a half-started collector behind
            raise

    def _wait_ready(self, verify: ssl.SSLContext | bool, timeout_s: float) -> None:
        assert self.proc is not None
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", verify=verify, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"collector not ready within {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown, requests in flight cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def sample_measurement(probe_id: str, at: float, *, index: int = 0, cc: str = "ZZ", asn: str = "AS0",
                       service: str = "telegram") -> dict[str, object]:
    """An OONI-shaped measurement (base format, a urlgetter-like test_keys) for tests and benchmarks."""
    from probe.fleet.contract import new_uid

    start = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
    host = f"{service}-{index % 7}.example"
    return {
        "measurement_uid": str(new_uid(at)), "probe_id": probe_id, "report_id": f"r-{probe_id}",
        "data_format_version": "0.2.0", "software_name": "probe", "software_version": "0.1.0",
        "test_name": "urlgetter", "test_version": "0.1.0", "measurement_start_time": start,
        "test_start_time": start, "test_runtime": 0.25, "probe_cc": cc, "probe_asn": asn,
        "probe_network_name": None, "probe_ip": "127.0.0.1", "input": f"https://{host}/",
        "service": service, "annotations": {"platform": "linux", "engine_name": "probe"},
        "test_helpers": {}, "test_keys": {
            "failure": None if index % 5 else "connection_reset",
            "queries": [{"hostname": host, "query_type": "A", "failure": None, "t0": 0.001, "t": 0.012,
                         "answers": [{"answer_type": "A", "ipv4": "198.18.1.10", "ttl": 300}]}],
            "tcp_connect": [{"ip": "198.18.1.10", "port": 443, "t0": 0.013, "t": 0.031,
                             "status": {"success": True, "failure": None}}],
            "tls_handshakes": [{"server_name": host, "t0": 0.031, "t": 0.090,
                                "failure": None if index % 5 else "connection_reset",
                                "tls_version": "TLSv1.3", "cipher_suite": "TLS_AES_128_GCM_SHA256"}],
        },
    }
