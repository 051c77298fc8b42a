"""probe.checks.throughput over loopback: a Python TLS server that throttles by SNI.

The server answers GET with ``size`` bytes (the Range end + 1 if asked), paced at
``rate`` B/s when the connection's SNI is in ``throttled``; ``throttled_up`` paces
reading a POST body instead. Only 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import ssl
from pathlib import Path

import pytest
import trustme

from probe.checks import throughput
from probe.checks.throughput import measure_throughput, tcp_info, throttling_test
from probe.core.config import Target
from probe.core.context import Context
from probe.core.records import check_record
from tests.conftest import make_context, server_context

_RANGE = re.compile(rb"range: bytes=0-(\d+)", re.IGNORECASE)
_LENGTH = re.compile(rb"content-length: (\d+)", re.IGNORECASE)
CHUNK = 1024


class ThroughputServer:
    def __init__(
        self, context: ssl.SSLContext, *, size: int = 4 << 20, rate: float = 16_000,
        throttled: frozenset[str] = frozenset(), throttled_up: frozenset[str] = frozenset(),
        status: int = 200, handshake_delay: float = 0.0,
    ) -> None:
        self.context, self.size, self.rate = context, size, rate
        self.throttled, self.throttled_up, self.status = throttled, throttled_up, status
        self.names: dict[int, str | None] = {}
        self.received = 0
        self.ends: list[str] = []  # how each upload ended: "eof" (a FIN) or "reset"
        context.sni_callback = self._sni

    def _sni(self, obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.names[id(obj)] = name

    async def __aenter__(self) -> ThroughputServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.throttled_up:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._handle, sock=sock, ssl=self.context, limit=2048)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = self.names.get(id(writer.get_extra_info("ssl_object")))
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            if head.startswith(b"POST"):
                await self._post(reader, writer, head, name in self.throttled_up)
            else:
                await self._get(writer, head, name in self.throttled)
        except ConnectionResetError:
            self.ends.append("reset")
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _get(self, writer: asyncio.StreamWriter, head: bytes, slow: bool) -> None:
        found = _RANGE.search(head)
        size = min(self.size, int(found.group(1)) + 1) if found else self.size
        code = 206 if found and self.status == 200 else self.status
        writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: {size}\r\n\r\n".encode())
        block = b"x" * (CHUNK if slow else 16 * CHUNK)
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0
        while sent < size:
            piece = block[: size - sent]
            writer.write(piece)
            sent += len(piece)
            await writer.drain()
            if slow:
                await asyncio.sleep(max(0.0, start + sent / self.rate - loop.time()))

    async def _post(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes,
                    slow: bool) -> None:
        if slow:  # asyncio's TLS layer buffers 256 KiB ahead of the app by default
            writer.transport.set_read_buffer_limits(high=4096)  # type: ignore[attr-defined]
        found = _LENGTH.search(head)
        size = int(found.group(1)) if found else 0
        loop = asyncio.get_running_loop()
        start, got = loop.time(), 0
        while got < size:
            data = await reader.read(min(CHUNK, size - got))
            if not data:
                self.ends.append("eof")
                return
            got += len(data)
            self.received += len(data)
            if slow:
                await asyncio.sleep(max(0.0, start + got / self.rate - loop.time()))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()


SLOW = "slow.test"
RATE = 16_000  # 128 kbit/s


@pytest.fixture
async def server(ca: trustme.CA) -> ThroughputServer:  # type: ignore[misc]
    async with ThroughputServer(server_context(ca, "good.test"), rate=RATE, throttled=frozenset({SLOW}),
                                throttled_up=frozenset({SLOW})) as srv:
        yield srv


def _ctx(ca_file: Path, **settings: object) -> Context:
    return make_context(ca_file, **settings)


async def test_fast_download_is_complete_and_sampled(server: ThroughputServer, ctx: Context) -> None:
    result = await measure_throughput("127.0.0.1", server.port, "good.test", "https://good.test/big", ctx,
                                      max_bytes=256 * 1024, max_seconds=3, target="t")
    d = result.details
    assert result.ok and result.check == "throughput" and result.role == "target"
    assert d.complete and not d.timed_out and d.bytes == 256 * 1024 and d.status == 206
    assert d.bytes_used > d.bytes and d.reads >= 2
    assert len(d.samples) >= 4 and all(b2 >= b1 for (_, b1), (_, b2) in zip(d.samples, d.samples[1:], strict=False))
    assert d.tls_handshake_time is not None and d.time_to_first_byte is not None
    assert d.retransmissions is not None  # Linux: TCP_INFO readable
    assert d.rate_bytes_per_second and d.rate_bytes_per_second > 10 * RATE
    record = check_record(result, ctx.meta, "svc", "cat")
    assert record["test_keys"]["samples"] and record["test_keys"]["direction"] == "down"


async def test_throttled_download_times_out_but_is_kept(server: ThroughputServer, ctx: Context) -> None:
    result = await measure_throughput("127.0.0.1", server.port, SLOW, "https://good.test/big", ctx,
                                      max_bytes=256 * 1024, max_seconds=1.5)
    d = result.details
    assert result.ok and result.failure is None  # evidence, not a failure
    assert d.timed_out and not d.complete and 0 < d.bytes < 256 * 1024
    assert d.rate_bytes_per_second == pytest.approx(RATE, rel=0.25)
    assert 1.0 < d.samples[-1][0] <= 1.6 and len(d.samples) >= 4


async def test_stop_rule_ends_a_transfer_early(server: ThroughputServer, ctx: Context) -> None:
    result = await measure_throughput("127.0.0.1", server.port, SLOW, "https://good.test/big", ctx,
                                      max_bytes=256 * 1024, max_seconds=5, stop=lambda s: s[-1][0] > 0.5)
    assert result.ok and result.details.stopped_early and not result.details.timed_out
    assert result.runtime < 1.5


async def test_upload_counts_acknowledged_bytes(server: ThroughputServer, ctx: Context) -> None:
    fast = await measure_throughput("127.0.0.1", server.port, "good.test", "https://good.test/upload", ctx,
                                    max_bytes=128 * 1024, max_seconds=3, direction="up")
    assert fast.ok and fast.details.complete and fast.details.bytes == 128 * 1024 and fast.details.status == 200
    slow = await measure_throughput("127.0.0.1", server.port, SLOW, "https://good.test/upload", ctx,
                                    max_bytes=512 * 1024, max_seconds=2, direction="up")
    d = slow.details
    assert slow.ok and d.timed_out and d.bytes < 128 * 1024
    assert d.rate_bytes_per_second is not None and d.rate_bytes_per_second < 4 * RATE


async def test_failures_are_classified(ctx: Context) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    result = await measure_throughput("127.0.0.1", port, "good.test", "https://good.test/", ctx,
                                      max_bytes=1024, max_seconds=1)
    assert not result.ok and result.failure == "connection_refused" and result.failed_operation == "connect"


async def test_http_error_is_not_a_usable_flow(ca: trustme.CA, ctx: Context) -> None:
    async with ThroughputServer(server_context(ca, "good.test"), status=404, size=20_000) as srv:
        result = await measure_throughput("127.0.0.1", srv.port, "good.test", "https://good.test/x", ctx,
                                          max_bytes=64 * 1024, max_seconds=2)
    assert result.ok and result.details.status == 404
    assert not throughput.flow(result).ok


def _target(host: str, direction: str = "down") -> Target:
    return Target(name="t", service="svc", category="cat", host=host, checks=("throughput",),
                  options={"throughput_direction": direction})


@pytest.mark.parametrize("direction", ["down", "up"])
async def test_throttling_test_detects_sni_throttling(server: ThroughputServer, ca_file: Path,
                                                      direction: str) -> None:
    ctx = _ctx(ca_file, throughput_max_seconds=6.0)
    results, decision = await throttling_test(_target(SLOW, direction), ctx, "127.0.0.1", server.port,
                                              "https://good.test/big", rng=random.Random(7))
    assert decision["blocking"] == "throttling" and decision.direction == direction
    assert decision.estimated_rate_bps is not None
    if direction == "down":
        assert decision.estimated_rate_bps == pytest.approx(RATE, rel=0.3)
    else:  # the loopback server's TLS and socket buffers take ~30 KB at once (the lab checks accuracy)
        assert RATE / 2 < decision.estimated_rate_bps < 2.5 * RATE
    assert decision.control_rate_bps and decision.control_rate_bps > 10 * RATE
    assert decision.runs == ("positive", "positive") and decision.confidence >= 0.99
    assert decision.bytes_used <= ctx.settings.throughput_max_bytes
    assert decision.seconds_used <= 6.5
    roles = [(r.role, r.details.sni) for r in results]
    assert ("target", SLOW) in roles and ("control", None) in roles
    assert any(r == "control" and s and s.endswith(("example.com", "example.net", "example.org")) for r, s in roles)


async def test_throttling_test_clears_an_unthrottled_target(server: ThroughputServer, ca_file: Path) -> None:
    ctx = _ctx(ca_file)
    results, decision = await throttling_test(_target("good.test", "both"), ctx, "127.0.0.1", server.port,
                                              "https://good.test/big")
    assert decision.blocking is False and decision.direction == "both"
    assert set(decision.directions) == {"down", "up"}
    assert decision.seconds_used < 3
    assert {r.details.direction for r in results} == {"down", "up"}


def test_random_control_sni_is_innocuous() -> None:
    names = {throughput.random_control_sni(random.Random(i)) for i in range(20)}
    assert len(names) > 15 and all(".example." in n for n in names)


def test_default_url_and_directions() -> None:
    t = Target(name="t", service="s", category="c", host="h.test", urls=("http://h.test/", "https://h.test/a"))
    assert throughput.default_url(t) == "https://h.test/a"
    assert throughput.default_url(Target(name="t", service="s", category="c", host="h.test")) == "https://h.test/"
    assert throughput.directions_of(_target("x", "both")) == ("down", "up")
    assert throughput.directions_of(_target("x")) == ("down",)


async def test_a_stopped_upload_is_reset_not_drained(server: ThroughputServer, ctx: Context) -> None:
    """A graceful close would keep sending the kernel's buffer through the policer after the
    measurement ended, slowing the next transfer on the same policer (and costing data)."""
    result = await measure_throughput("127.0.0.1", server.port, SLOW, "https://good.test/upload", ctx,
                                      max_bytes=512 * 1024, max_seconds=5, direction="up",
                                      stop=lambda s: s[-1][0] > 0.5)
    assert result.ok and result.details.stopped_early and not result.details.complete
    at_stop = server.received
    for _ in range(60):  # the server reads what its buffers already hold, then sees the end
        if server.ends:
            break
        await asyncio.sleep(0.05)
    assert server.ends == ["reset"]
    # A FIN would have let the client's 32 KiB send buffer drain at 16 KB/s for seconds more.
    await asyncio.sleep(1.0)
    assert server.received - at_stop < 24 * 1024, "the server kept receiving after the transfer ended"


async def test_tcp_info_of_a_closed_transport_is_none(server: ThroughputServer) -> None:
    """uvloop's socket of a closed transport has fd -1 and raised ValueError('negative file
    descriptor'): the upload control failed with unknown_failure whenever the server closed first."""
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    sock = writer.get_extra_info("socket")
    assert tcp_info(sock) is not None
    writer.transport.abort()
    await asyncio.sleep(0)  # the loop closes the socket
    for _ in range(100):
        if sock.fileno() < 0:
            break
        await asyncio.sleep(0.01)
    assert tcp_info(sock) is None


class _Writer:
    """What ``_close`` touches of a connection a drain probe opened."""

    def __init__(self) -> None:
        self.transport = self
        self.aborted = False

    def get_extra_info(self, _name: str) -> None:
        return None

    def abort(self) -> None:
        self.aborted = True


async def test_the_next_transfer_waits_for_the_path_queue_to_drain(ctx: Context) -> None:
    """Connect times 420, 300, 120, 35 ms on a 30 ms path: it waits for the fourth, then starts."""
    import dataclasses

    delays = [0.42, 0.30, 0.12, 0.035, 0.035]
    writers: list[_Writer] = []

    async def connect(_host: str, _port: int) -> tuple[None, _Writer]:
        await asyncio.sleep(delays[len(writers)])
        writers.append(_Writer())
        return None, writers[-1]

    probe_ctx = dataclasses.replace(ctx, open_connection=connect)
    ep = throughput.Endpoint("target", "127.0.0.1", 443, "x.test", "https://x.test/")
    path = throughput._Path()
    await throughput._wait_drained(ep, probe_ctx, path, 5.0)
    assert writers == []  # no floor yet: the first transfer's own connect sets it
    path.note(0.030)
    await throughput._wait_drained(ep, probe_ctx, path, 5.0)
    assert len(writers) == 4 and all(w.aborted for w in writers)
    # bounded in time: a queue that never drains costs at most the time given
    delays[:] = [0.3] * 50
    writers.clear()
    t0 = asyncio.get_running_loop().time()
    await throughput._wait_drained(ep, probe_ctx, path, 0.5)
    assert asyncio.get_running_loop().time() - t0 < 1.5 and 1 <= len(writers) <= 3


def test_a_head_of_line_stall_is_compared_on_what_the_path_carried() -> None:
    """64 kbit/s policer: in-order bytes sat at 2114 for 3.5 s (RTO backoff), the path carried 26 KB."""
    from probe.core.records import CheckResult

    stalled = tuple((t / 4, 2114) for t in range(1, 15))
    carried = tuple((t / 4, 2114 + 1800 * t) for t in range(1, 15))

    def result(samples: tuple[tuple[float, int], ...], link: tuple[tuple[float, int], ...]) -> CheckResult[
            throughput.ThroughputDetails]:
        details = throughput.ThroughputDetails(
            url="u", address="a", port=443, sni="s", direction="down", max_bytes=65536, max_seconds=3.5,
            samples=samples, link_samples=link, bytes=samples[-1][1] - 666, status=200)
        return CheckResult(check="throughput", target="t", input="i", ok=True, failure=None, failed_operation=None,
                           start_time=0.0, runtime=3.5, details=details)

    hol = throughput.flow(result(stalled, carried))
    assert hol.ok and hol.samples == carried  # the path's rate, not the stall
    nothing = throughput.flow(result(stalled, stalled))  # nothing carried either: a real stall stays unusable
    assert not nothing.ok and nothing.samples == stalled
    steady = throughput.flow(result(carried, carried))
    assert steady.ok and steady.samples == carried
