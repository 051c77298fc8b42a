"""The separate processes of ``bench/tls_handshakes.py``, one role each, so each one's CPU is measured alone.

- ``server``: a TLS server on 127.0.0.1 (asyncio + ssl) that completes the handshake and closes.
- ``probe``: the probe's own check, ``probe.checks.tls.handshake``, N times under a concurrency limit.
- ``loadgen``: N ``/probe`` requests to blackbox_exporter over keep-alive HTTP/1.1 connections;
  a deliberately lean client, so that it steals as little CPU as possible from the exporter.

Every role talks to its parent in JSON lines on stdout. ``probe`` and ``loadgen`` warm up, time a
few uncontended checks one after another, print ``{"event": "ready"}``, wait for a line on stdin
(so that the parent can read the CPU counters of the other processes), run the N checks, and print
``{"event": "done"}``. The server stops at EOF on stdin, so it never outlives the parent.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import io
import json
import os
import pstats
import re
import resource
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

# The repository's probe package, or a prototype copy of it (``tls_handshakes.py --probe-root``).
sys.path.insert(0, os.environ.get("BENCH_PROBE_ROOT") or str(Path(__file__).resolve().parents[1]))


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def wait_for_go() -> None:
    """Block until the parent says go (or goes away: then exit quietly)."""
    if not sys.stdin.readline():
        raise SystemExit(0)


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in KiB: VmRSS now, VmHWM the peak so far."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_workers(n: int, concurrency: int, one: Callable[[], Awaitable[None]]) -> None:
    """``concurrency`` workers share a counter of ``n`` checks: never more than that many in flight."""
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))


def profile_text(profiler: cProfile.Profile, limit: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


# -- server ---------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # the handshake is all we serve

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        server = await asyncio.start_server(
            handle, "127.0.0.1", 0, ssl=context, backlog=4096, ssl_handshake_timeout=args.timeout
        )
        loop.add_reader(sys.stdin.fileno(), stop.set)  # readable = EOF (the parent never writes)
        emit("ready", port=server.sockets[0].getsockname()[1])
        async with server:
            await stop.wait()

    asyncio.run(main())


# -- probe ----------------------------------------------------------------------------


def probe(args: argparse.Namespace) -> None:
    import probe.checks.tls
    from probe.checks.tls import handshake
    from probe.core.config import Settings, Timeouts
    from probe.core.context import Context
    from probe.core.records import ProbeMeta

    if args.cert_cache:  # prototype: the same certificate is parsed once (a proposed core change)
        probe.checks.tls.parse_certificate = functools.lru_cache(maxsize=1024)(probe.checks.tls.parse_certificate)
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    if args.loop == "uvloop":  # prototype: the probe on uvloop's event loop (a proposed dependency)
        import uvloop

        run = uvloop.run
    timeouts = Timeouts(connect=args.timeout, tls=args.timeout)
    ctx = Context(settings=Settings(ca_bundle=args.ca, timeouts=timeouts), meta=ProbeMeta(probe_id="bench"))
    handshakes: list[float] = []
    runtimes: list[float] = []
    failures: dict[str, int] = {}

    async def one() -> None:
        result = await handshake("127.0.0.1", args.port, args.sni, ctx, target="bench")
        if result.ok:
            handshakes.append(result.timings["tls_handshake"])
            runtimes.append(result.runtime)
        else:
            key = str(result.failure)
            failures[key] = failures.get(key, 0) + 1

    async def sequential(count: int) -> None:
        for _ in range(count):
            await one()

    run(sequential(1))  # builds and caches the SSL context, warms imports
    if failures:
        emit("error", message=f"warm-up check failed: {failures}")
        return
    handshakes.clear()
    runtimes.clear()
    run(sequential(args.single))
    emit("ready", single=handshakes, single_runtime=runtimes, rss_kb=status_kb("VmRSS"), cpu=cpu_now())
    handshakes.clear()
    runtimes.clear()
    wait_for_go()

    profiler = cProfile.Profile() if args.profile else None
    cpu0, t0 = cpu_now(), time.perf_counter()
    if profiler:
        profiler.enable()
    run(run_workers(args.n, args.concurrency, one))
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - t0, cpu_now() - cpu0
    emit(
        "done", wall=wall, cpu=cpu, ok=len(handshakes), failures=failures, handshakes=handshakes,
        runtimes=runtimes, hwm_kb=status_kb("VmHWM"), rss_kb=status_kb("VmRSS"),
        profile=profile_text(profiler, args.profile) if profiler else None,
    )


# -- load generator for blackbox_exporter ---------------------------------------------

DURATION = re.compile(rb"^probe_duration_seconds ([0-9.eE+-]+)$", re.M)
SUCCESS = re.compile(rb"^probe_success ([01])(?:\.0)?$", re.M)  # blackbox: 1; prometheus_client: 1.0


class Exporter:
    """One keep-alive HTTP/1.1 connection to the exporter; just enough HTTP for its replies."""

    def __init__(self, port: int, path: str, timeout: float) -> None:
        self.port, self.timeout = port, timeout
        self.request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def probe(self) -> bytes:
        return await asyncio.wait_for(self._probe(), self.timeout)

    async def _probe(self) -> bytes:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        reader = self.reader
        self.writer.write(self.request)
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        if not head.startswith((b"http/1.1 200", b"http/1.0 200")):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        if head.startswith(b"http/1.0") or b"\r\nconnection: close" in head:  # one request per connection
            body = await reader.read()
            self.close()
            self.reader = self.writer = None
            return body
        match = re.search(rb"\r\ncontent-length: *(\d+)", head)
        if match:
            return await reader.readexactly(int(match.group(1)))
        body = b""
        while True:  # chunked
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return body
            body += chunk[:-2]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def loadgen(args: argparse.Namespace) -> None:
    path = args.path or f"/probe?module={args.module}&target=127.0.0.1:{args.port}"
    durations: list[float] = []
    failures: dict[str, int] = {}

    async def run(n: int, concurrency: int) -> None:
        clients = [Exporter(args.exporter_port, path, args.timeout + 5) for _ in range(min(concurrency, n))]
        left = n

        async def worker(client: Exporter) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                try:
                    body = await client.probe()
                except Exception as exc:  # noqa: BLE001 - counted, and the connection is replaced
                    client.close()
                    client.reader = client.writer = None
                    key = f"{type(exc).__name__}: {exc}"[:80]
                    failures[key] = failures.get(key, 0) + 1
                    continue
                success, duration = SUCCESS.search(body), DURATION.search(body)
                if success and success.group(1) == b"1" and duration:
                    durations.append(float(duration.group(1)))
                else:
                    failures["probe_success 0"] = failures.get("probe_success 0", 0) + 1

        try:
            await asyncio.gather(*(worker(c) for c in clients))
        finally:
            for client in clients:
                client.close()

    asyncio.run(run(1, 1))
    if failures:
        emit("error", message=f"warm-up probe failed: {failures}")
        return
    durations.clear()
    asyncio.run(run(args.single, 1))
    emit("ready", single=durations)
    durations.clear()
    wait_for_go()
    t0 = time.perf_counter()
    asyncio.run(run(args.n, args.concurrency))
    emit("done", wall=time.perf_counter() - t0, ok=len(durations), failures=failures, durations=durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    roles = parser.add_subparsers(dest="role", required=True)
    server = roles.add_parser("server")
    server.add_argument("--cert", required=True)
    server.add_argument("--key", required=True)
    for role in (roles.add_parser("probe"), roles.add_parser("loadgen")):
        role.add_argument("--port", type=int, required=True, help="the TLS server's port")
        role.add_argument("--n", type=int, required=True)
        role.add_argument("--concurrency", type=int, required=True)
        role.add_argument("--single", type=int, default=20, help="uncontended checks, one after another")
    for role in roles.choices.values():
        role.add_argument("--timeout", type=float, default=10.0)
    probe_role = roles.choices["probe"]
    probe_role.add_argument("--ca", required=True)
    probe_role.add_argument("--sni", required=True)
    probe_role.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    probe_role.add_argument("--cert-cache", action="store_true")
    probe_role.add_argument("--profile", type=int, default=0, help="cProfile the N checks; print this many rows")
    load_role = roles.choices["loadgen"]
    load_role.add_argument("--exporter-port", type=int, required=True)
    load_role.add_argument("--module", default="tls")
    load_role.add_argument("--path", help="the request path (default: blackbox's /probe?module=...&target=...)")
    args = parser.parse_args()
    {"server": serve, "probe": probe, "loadgen": loadgen}[args.role](args)


if __name__ == "__main__":
    main()
