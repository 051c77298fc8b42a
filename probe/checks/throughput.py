"""Throughput check and the throttling test built on it.

:func:`measure_throughput` makes one HTTP/1.1 transfer over TLS (raw asyncio +
ssl, so that the SNI, the address and every read are ours to control) and
samples the cumulative payload bytes. Samples are taken, as ndt7 does, at
random intervals averaging 250 ms (exponential, clipped), and also every
1/16 of the byte budget, so that a fast transfer that ends in 50 ms still has
enough intervals to compare. Uploads count bytes *acknowledged* (TCP_INFO
``tcpi_bytes_acked``), not bytes handed to the kernel, whose buffer would
otherwise make any upload look fast.

A transfer stopped by the time budget after making progress is kept as
evidence (``ok`` with ``timed_out``): a throttled flow is exactly one that runs
out of time.

:func:`throttling_test` compares the target SNI with controls that differ only
in the trigger (same address and port with a random innocuous SNI, no SNI, a
control host if configured), interleaved control / target / control so that
congestion hits both, under one byte and time budget per direction. The
decision itself is probe.analysis.throttling (pure).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import statistics
import string
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from probe.analysis import throttling
from probe.analysis.throttling import Flow, RunResult, Sample, ThrottlingDecision
from probe.checks.tcp import endpoint
from probe.core import failures
from probe.core.config import Target
from probe.core.context import Context
from probe.core.records import CheckResult, Role

Direction = Literal["down", "up"]
StopRule = Callable[[Sequence[Sample]], bool]

SAMPLE_MEAN = 0.25  # seconds, as ndt7
SAMPLE_MIN, SAMPLE_MAX = 0.1 * SAMPLE_MEAN, 2.5 * SAMPLE_MEAN
BYTE_SAMPLES = 16  # also sample every max_bytes / BYTE_SAMPLES
MAX_SAMPLES = 2000  # bound on a record's series
POLL_INTERVAL = 0.01  # seconds between TCP_INFO reads; the sampler keeps the random ~250 ms ones
READ_SIZE = 4096  # a quarter TLS record: a fast control that ends in 1 ms still gives ~10 intervals
HEADER_MAX = 65536
UPLOAD_CHUNK = 16384
MIN_FLOW_BYTES = 8192  # a transfer shorter than this says nothing about a rate

# struct tcp_info offsets (linux/tcp.h): stable ABI, fields only ever appended.
_TCPI_RTT, _TCPI_TOTAL_RETRANS, _TCPI_BYTES_ACKED, _TCPI_BYTES_RECEIVED, _TCPI_MIN_RTT = 68, 100, 120, 128, 148
_TCPI_LEN = 152
# Segment counts (kernel 4.6+): the segments the path carried, not just the in-order bytes.
_TCPI_SND_MSS, _TCPI_RCV_MSS, _TCPI_DATA_SEGS_IN, _TCPI_DELIVERED = 16, 20, 152, 192
_TCPI_SEGS_LEN = 196


@dataclass(frozen=True)
class TCPInfo:
    total_retrans: int
    bytes_acked: int
    bytes_received: int
    rtt_ms: float
    min_rtt_ms: float
    snd_mss: int = 0
    rcv_mss: int = 0
    data_segs_in: int | None = None  # data segments received, out-of-order and repeats included
    delivered: int | None = None  # segments the peer acknowledged or SACKed


def tcp_info(sock: Any) -> TCPInfo | None:
    """TCP_INFO where the platform has it (Linux); None elsewhere, and once the transport is closed.

    A closed transport's socket differs by event loop: asyncio's raises OSError (EBADF), uvloop's
    PseudoSocket has fd -1 and raises ValueError("negative file descriptor"). Both mean "gone".
    """
    option = getattr(socket, "TCP_INFO", None)
    if option is None or sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, option, 256)
    except (OSError, AttributeError, ValueError):
        return None
    if len(raw) < _TCPI_LEN:
        return None
    return TCPInfo(
        total_retrans=struct.unpack_from("I", raw, _TCPI_TOTAL_RETRANS)[0],
        bytes_acked=struct.unpack_from("Q", raw, _TCPI_BYTES_ACKED)[0],
        bytes_received=struct.unpack_from("Q", raw, _TCPI_BYTES_RECEIVED)[0],
        rtt_ms=struct.unpack_from("I", raw, _TCPI_RTT)[0] / 1000,
        min_rtt_ms=struct.unpack_from("I", raw, _TCPI_MIN_RTT)[0] / 1000,
        snd_mss=struct.unpack_from("I", raw, _TCPI_SND_MSS)[0],
        rcv_mss=struct.unpack_from("I", raw, _TCPI_RCV_MSS)[0],
        data_segs_in=struct.unpack_from("I", raw, _TCPI_DATA_SEGS_IN)[0] if len(raw) >= _TCPI_SEGS_LEN else None,
        delivered=struct.unpack_from("I", raw, _TCPI_DELIVERED)[0] if len(raw) >= _TCPI_SEGS_LEN else None,
    )


@dataclass(frozen=True)
class ThroughputDetails:
    url: str
    address: str
    port: int
    sni: str | None
    direction: str
    max_bytes: int
    max_seconds: float
    #: (seconds since the request was sent, cumulative payload bytes)
    samples: tuple[Sample, ...] = ()
    #: at the same times: bytes the path carried (segments x MSS), holes and retransmissions included
    link_samples: tuple[Sample, ...] = ()
    rate_bytes_per_second: float | None = None  # plateau estimate (probe.analysis.throttling.plateau_rate)
    mean_rate_bytes_per_second: float | None = None  # first to last sample
    bytes: int = 0  # payload bytes received (down) or acknowledged (up)
    bytes_used: int = 0  # everything this transfer cost: handshake, headers, payload
    status: int | None = None
    complete: bool = False  # the byte budget or the whole object was transferred
    timed_out: bool = False  # the time budget ended it after progress: kept as evidence
    stopped_early: bool = False  # the throttling test's stop rule ended it
    time_to_first_byte: float | None = None
    tls_handshake_time: float | None = None
    connect_time: float | None = None
    reads: int = 0
    retransmissions: int | None = None
    rtt_ms: float | None = None
    min_rtt_ms: float | None = None


class _Sampler:
    """Cumulative bytes at random times (ndt7) and at byte checkpoints, bounded in count."""

    def __init__(self, t0: float, byte_step: int, rng: random.Random) -> None:
        self.t0, self.byte_step, self.rng = t0, max(1, byte_step), rng
        self.samples: list[Sample] = []
        self.link_samples: list[Sample] = []
        self.next_time = 0.0
        self.next_bytes = 0

    def interval(self) -> float:
        return min(SAMPLE_MAX, max(SAMPLE_MIN, self.rng.expovariate(1 / SAMPLE_MEAN)))

    def offer(self, now: float, total: int, force: bool = False, link: int | None = None) -> bool:
        t = now - self.t0
        if not force and t < self.next_time and total < self.next_bytes:
            return False
        if len(self.samples) >= MAX_SAMPLES and not force:
            return False
        if force and self.samples and self.samples[-1][1] == total:
            return False  # no progress since the last sample: the transfer is over, not a stall
        if self.samples and self.samples[-1][0] >= t:
            t = self.samples[-1][0]
            self.samples[-1] = (t, total)
        else:
            t = round(t, 6)
            self.samples.append((t, total))
        if link is not None:
            if self.link_samples and self.link_samples[-1][0] >= t:
                self.link_samples[-1] = (t, link)
            else:
                self.link_samples.append((t, link))
        self.next_time = t + self.interval()
        self.next_bytes = total + self.byte_step
        return True


@dataclass
class _State:
    """What a transfer learned so far (mutable while it runs)."""

    timings: dict[str, float] = field(default_factory=dict)
    status: int | None = None
    payload: int = 0
    used: int = 0
    received: int = 0  # response bytes read by the application (head and body)
    reads: int = 0
    ttfb: float | None = None
    complete: bool = False
    timed_out: bool = False
    stopped: bool = False
    info: TCPInfo | None = None


def _path(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.netloc, path


def _request(method: str, url: str, ctx: Context, extra: str) -> bytes:
    host, path = _path(url)
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ctx.settings.user_agent}\r\n"
        f"Accept: */*\r\n{extra}Connection: close\r\n\r\n"
    ).encode()


def _parse_status(head: bytes) -> int:
    line = head.split(b"\r\n", 1)[0].split()
    if len(line) < 2 or not line[0].startswith(b"HTTP/") or not line[1].isdigit():
        raise failures.ProbeError(failures.HTTP_PROTOCOL_ERROR, "http_round_trip", "not an HTTP response")
    return int(line[1])


async def _read(
    reader: asyncio.StreamReader, deadline: float, ctx: Context, stopped: asyncio.Event | None = None
) -> bytes | None:
    """One read, or None when the time budget ran out or the stop rule fired."""
    left = deadline - ctx.monotonic()
    if left <= 0 or (stopped is not None and stopped.is_set()):
        return None
    if stopped is None:
        try:
            return await asyncio.wait_for(reader.read(READ_SIZE), left)
        except TimeoutError:
            return None
    read = asyncio.ensure_future(reader.read(READ_SIZE))
    stop = asyncio.ensure_future(stopped.wait())
    done, _ = await asyncio.wait({read, stop}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if read in done:
        return read.result()
    read.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await read
    return None


class _Poller:
    """Samples a counter at random times while a transfer runs, and applies the stop rule.

    The counter is the kernel's: bytes received (down) or acknowledged (up) from
    TCP_INFO. Application reads would see a 16 KiB TLS record at a time, two
    seconds apart at 64 kbit/s; the kernel sees every packet.
    """

    def __init__(self, sampler: _Sampler, count: Callable[[], int], stop: StopRule | None,
                 state: _State, ctx: Context, deadline: float, down: bool) -> None:
        self.sampler, self.count, self.stop, self.state, self.ctx = sampler, count, stop, state, ctx
        self.deadline, self.down = deadline, down
        self.base: TCPInfo | None = None
        self.stopped = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def link(self) -> int | None:
        """Bytes the path carried since the first poll: what a policer passed.

        In-order bytes stall while a lost segment is retransmitted, though the
        segments behind it keep arriving; at 64 kbit/s with a short policer
        queue those stalls last seconds and halve an in-order rate estimate.
        """
        info = self.state.info
        if info is None or info.data_segs_in is None or info.delivered is None:
            return None
        self.base = self.base or info
        if self.down:
            return (info.data_segs_in - (self.base.data_segs_in or 0)) * info.rcv_mss
        return (info.delivered - (self.base.delivered or 0)) * info.snd_mss

    def offer(self, force: bool = False) -> None:
        total, link = self.count(), self.link()
        if link is not None:  # ahead of the in-order count by at most a window of holes
            link = max(total, min(link, total + LINK_SLACK))
        if self.sampler.offer(self.ctx.monotonic(), total, force, link) and self.stop is not None \
                and self.stop(self.sampler.samples):
            self.state.stopped = True
            self.stopped.set()

    async def _run(self) -> None:
        while not self.stopped.is_set():
            left = self.deadline - self.ctx.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(POLL_INTERVAL, left))
            self.offer()

    async def __aenter__(self) -> _Poller:
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


LINK_SLACK = 65536  # out-of-order bytes a throttled flow holds; a fast one has everything at once
RECORD_SLACK = 16384 + 1024  # one TLS record (and its framing) received but not yet decrypted


def _received(sock: Any, state: _State) -> Callable[[], int]:
    """Bytes received since the request, at packet granularity where TCP_INFO is readable.

    The kernel's count moves with every packet; the application's moves a whole
    TLS record at a time, seconds apart on a throttled flow. The kernel's count
    is used, but never more than one record ahead of what the application has
    read: on a fast link the kernel has everything before the first sample, and
    the reads are then the finer clock.
    """
    first = tcp_info(sock)
    if first is None:
        return lambda: state.received
    base, last = first.bytes_received, 0

    def count() -> int:
        nonlocal last
        info = tcp_info(sock)  # None once the peer's close has closed the transport
        if info is not None:
            state.info = info
            last = max(last, info.bytes_received - base)
        return max(state.received, min(last, state.received + RECORD_SLACK))

    return count


async def _download(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock: Any, url: str, max_bytes: int,
    deadline: float, sampler: _Sampler, state: _State, stop: StopRule | None, ctx: Context,
) -> None:
    request = _request("GET", url, ctx, f"Range: bytes=0-{max_bytes - 1}\r\n")
    count = _received(sock, state)
    writer.write(request)
    state.used += len(request)
    sent = ctx.monotonic()
    sampler.t0 = sent
    head = b""
    while True:  # the response head, bounded in size and time
        data = await _read(reader, deadline, ctx)
        if data is None:
            raise failures.ProbeError(failures.GENERIC_TIMEOUT, "http_round_trip", "no response in time")
        if not data:
            raise failures.ProbeError(failures.EOF_ERROR, "http_round_trip", "closed before a response")
        if state.ttfb is None:
            state.ttfb = ctx.monotonic() - sent
        state.reads += 1
        state.used += len(data)
        state.received += len(data)
        head += data
        if b"\r\n\r\n" in head:
            break
        if len(head) > HEADER_MAX:
            raise failures.ProbeError(failures.HTTP_PROTOCOL_ERROR, "http_round_trip", "response head too large")
    head, body = head.split(b"\r\n\r\n", 1)
    state.status = _parse_status(head)
    state.payload = min(len(body), max_bytes)
    body_start = state.received - len(body)  # on the counter's scale
    async with _Poller(sampler, count, stop, state, ctx, deadline, down=True) as poller:
        poller.offer(force=True)
        while state.payload < max_bytes:
            data = await _read(reader, deadline, ctx, poller.stopped)
            if data is None:
                state.timed_out = not state.stopped
                break
            if not data:
                state.complete = True  # the whole object (smaller than the budget)
                break
            state.reads += 1
            state.used += len(data)
            state.received += len(data)
            state.payload = min(max_bytes, state.payload + len(data))
            poller.offer()
        else:
            state.complete = True
        poller.offer(force=True)
    # Bytes the kernel received count even if their TLS record never completed: at 64 kbit/s
    # one 16 KiB record takes 2 s, and a transfer stopped in between has read nothing yet.
    state.payload = max(state.payload, min(max_bytes, count() - body_start))


async def _upload(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock: Any, url: str, max_bytes: int, deadline: float,
    sampler: _Sampler, state: _State, stop: StopRule | None, ctx: Context, rng: random.Random,
) -> None:
    """POST ``max_bytes``; the series counts bytes the peer acknowledged."""
    with contextlib.suppress(OSError, ValueError):  # keep the kernel from buffering far ahead of the network
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * UPLOAD_CHUNK)
    writer.transport.set_write_buffer_limits(high=UPLOAD_CHUNK)
    request = _request("POST", url, ctx, f"Content-Type: application/octet-stream\r\nContent-Length: {max_bytes}\r\n")
    try:
        writer.write(request)
        await writer.drain()
    except Exception as exc:
        raise await failures.write_error(exc, reader) from exc
    state.used += len(request)
    start_info = tcp_info(sock)
    base = start_info.bytes_acked if start_info else 0
    sent = ctx.monotonic()
    sampler.t0 = sent
    chunk = rng.randbytes(UPLOAD_CHUNK)
    written = 0

    def acked() -> int:
        info = tcp_info(sock)
        if info is None:  # no TCP_INFO: fall back to bytes handed over
            return written
        state.info = info
        return max(0, min(written, info.bytes_acked - base))

    async with _Poller(sampler, acked, stop, state, ctx, deadline, down=False) as poller:
        poller.offer(force=True)
        while written < max_bytes and not poller.stopped.is_set():
            piece = chunk[: max_bytes - written]
            writer.write(piece)
            written += len(piece)
            state.used += len(piece)
            drained = asyncio.ensure_future(writer.drain())
            stopped = asyncio.ensure_future(poller.stopped.wait())
            finished, _ = await asyncio.wait({drained, stopped}, timeout=max(0.0, deadline - ctx.monotonic()),
                                             return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if drained not in finished:
                drained.cancel()
                state.timed_out = not state.stopped
                break
            drained.result()
            poller.offer()
        while not state.stopped and not state.timed_out and acked() < written:  # the last acks
            if ctx.monotonic() >= deadline:
                state.timed_out = True
                break
            await asyncio.sleep(0.005)
            poller.offer()
        poller.offer(force=True)
    state.payload = acked()
    state.complete = state.payload >= max_bytes
    if state.complete:  # the server's answer, if it gives one quickly (not needed for the rate)
        state.status = await _upload_status(reader, ctx)


async def _upload_status(reader: asyncio.StreamReader, ctx: Context) -> int | None:
    with contextlib.suppress(Exception):
        data = await asyncio.wait_for(reader.read(READ_SIZE), min(1.0, ctx.settings.timeouts.http))
        return _parse_status(data) if data else None
    return None


async def measure_throughput(
    address: str,
    port: int,
    sni: str | None,
    url: str,
    ctx: Context,
    *,
    role: Role = "target",
    max_bytes: int,
    max_seconds: float,
    direction: Direction = "down",
    target: str | None = None,
    verify: bool = False,
    stop: StopRule | None = None,
    rng: random.Random | None = None,
    transfer_seconds: float | None = None,
) -> CheckResult[ThroughputDetails]:
    """One transfer of at most ``max_bytes`` payload in at most ``max_seconds`` (connect included).

    ``transfer_seconds``, if given, bounds the transfer after the handshake instead: a handshake
    slowed by a policer then does not eat the time the rate is measured in.

    ``verify`` is off by default: the throttling test compares rates, and the
    control SNIs cannot verify; the TLS check is where certificates are judged.
    ``stop`` is called at each new sample and ends the transfer early when true.
    """
    rng = rng or random.Random()
    url = url.replace("{bytes}", str(max_bytes))  # e.g. https://host/large?bytes={bytes}
    start, t0 = ctx.clock(), ctx.monotonic()
    deadline = t0 + max_seconds
    state = _State()
    sampler = _Sampler(t0, max_bytes // BYTE_SAMPLES, rng)
    failure: str | None = None
    operation: str | None = None
    writer: asyncio.StreamWriter | None = None
    try:
        try:
            reader, conn = await asyncio.wait_for(
                ctx.open_connection(address, port), min(ctx.settings.timeouts.connect, max_seconds)
            )
        except Exception as exc:
            raise failures.ProbeError(failures.classify(exc), "connect", str(exc)) from exc
        writer = conn
        state.timings["connect"] = ctx.monotonic() - t0
        t1 = ctx.monotonic()
        context = ctx.ssl_context(verify=verify and sni is not None, alpn=("http/1.1",))
        try:
            timeout = max(0.001, min(ctx.settings.timeouts.tls, deadline - t1))
            await asyncio.wait_for(
                conn.start_tls(context, server_hostname=sni, ssl_handshake_timeout=timeout), timeout
            )
        except Exception as exc:
            state.timings["tls_handshake"] = ctx.monotonic() - t1
            raise failures.ProbeError(failures.classify(exc), "tls_handshake", str(exc)) from exc
        state.timings["tls_handshake"] = ctx.monotonic() - t1
        if transfer_seconds is not None:
            deadline = min(deadline, ctx.monotonic() + transfer_seconds)
        sock = conn.get_extra_info("socket")
        info = tcp_info(sock)
        state.used = info.bytes_acked if info else 0  # handshake bytes we sent (a lower bound)
        if direction == "down":
            await _download(reader, conn, sock, url, max_bytes, deadline, sampler, state, stop, ctx)
        else:
            await _upload(reader, conn, sock, url, max_bytes, deadline, sampler, state, stop, ctx, rng)
        state.info = tcp_info(sock) or state.info
        state.timings["transfer"] = ctx.monotonic() - t1 - state.timings["tls_handshake"]
    except Exception as exc:  # noqa: BLE001 - classified
        if state.payload > 0:  # progress, then an error (a reset mid-transfer): still evidence
            state.timed_out = state.timed_out or failures.classify(exc) == failures.GENERIC_TIMEOUT
        else:
            failure = failures.classify(exc)
            operation = failures.operation_of(exc, "read")
    finally:
        if writer is not None:
            _close(writer, reset=not state.complete)
    details = _details(address, port, sni, url, direction, max_bytes, max_seconds, sampler, state)
    return CheckResult(
        check="throughput",
        target=target or (urlsplit(url).hostname or address),
        input=f"{url} @ {endpoint(address, port)} sni={sni or '-'} {direction}",
        ok=failure is None,
        failure=failure,
        failed_operation=operation,
        start_time=start,
        runtime=ctx.monotonic() - t0,
        details=details,
        role=role,
        timings=state.timings,
    )


def _close(writer: asyncio.StreamWriter, reset: bool) -> None:
    """End a transfer; an unfinished one with a reset (SO_LINGER 0), not a FIN.

    A graceful close of a stopped upload lets the kernel drain its send buffer
    through the same policer for seconds after the measurement ended: the next
    transfer, sharing the policer, then measured the leftover (128 kbit/s up was
    estimated at 36-140 kbit/s). A reset also stops a server still sending.
    """
    if reset:
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError, TypeError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


def _details(
    address: str, port: int, sni: str | None, url: str, direction: str, max_bytes: int,
    max_seconds: float, sampler: _Sampler, state: _State,
) -> ThroughputDetails:
    samples, link = tuple(sampler.samples), tuple(sampler.link_samples)
    info = state.info
    return ThroughputDetails(
        url=url, address=address, port=port, sni=sni, direction=direction,
        max_bytes=max_bytes, max_seconds=max_seconds, samples=samples, link_samples=link,
        rate_bytes_per_second=throttling.estimate_rate([Flow(samples, link_samples=link)]),
        mean_rate_bytes_per_second=throttling.mean_rate(samples),
        bytes=state.payload, bytes_used=state.used, status=state.status, complete=state.complete,
        timed_out=state.timed_out, stopped_early=state.stopped, time_to_first_byte=state.ttfb,
        tls_handshake_time=state.timings.get("tls_handshake"), connect_time=state.timings.get("connect"),
        reads=state.reads,
        retransmissions=info.total_retrans if info else None,
        rtt_ms=info.rtt_ms if info else None,
        min_rtt_ms=info.min_rtt_ms if info else None,
    )


# -- The throttling test -------------------------------------------------------------------


def flow(result: CheckResult[ThroughputDetails]) -> Flow:
    """A transfer as the decision sees it: usable only if it moved enough bytes."""
    d = result.details
    enough = min(MIN_FLOW_BYTES, d.max_bytes)
    samples = d.samples
    carried = d.link_samples[-1][1] - d.link_samples[0][1] if d.link_samples else 0
    if d.bytes < enough and carried >= enough:
        # Head-of-line stall: a lost early segment's retransmission backed off (1, 2 s ...) behind a
        # 64 kbit/s policer's 4-packet queue; in-order bytes sat at 2 KB for 3.5 s while the path
        # carried 26 KB behind it. What the path carried is the flow's rate (link >= in-order: a
        # benign flow only reads faster this way).
        samples = d.link_samples
    usable = result.ok and (d.bytes >= enough or carried >= enough) and (
        d.status is None or 200 <= d.status < 300
    )
    return Flow(samples=samples, link_samples=d.link_samples, handshake_time=d.tls_handshake_time, ok=usable,
                connect_time=d.connect_time)


def random_control_sni(rng: random.Random) -> str:
    """An innocuous name nobody filters: a random label under an RFC 2606 example domain."""
    label = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(6, 10)))
    return f"{label}.example.{rng.choice(('com', 'net', 'org'))}"


@dataclass(frozen=True)
class Endpoint:
    """Where and how one flow of the test connects."""

    role: Role
    address: str
    port: int
    sni: str | None
    url: str


@dataclass
class _Budget:
    """Bytes and seconds left for one direction's decision."""

    bytes: int
    deadline: float

    def take(self, want: int) -> int:
        return max(0, min(want, self.bytes))


MIN_PLATEAU_SECONDS = 1.5
CLEAR_FRACTION = 0.25  # the target's running rate, as a fraction of the control's, that is clear
STABLE = 0.25  # the plateau's two halves agree within this fraction of its rate


def stop_rule(control_rate: float | None) -> StopRule:
    """End a target transfer once its plateau is stable and far below the control's rate."""

    def stop(samples: Sequence[Sample]) -> bool:
        if control_rate is None or len(samples) < 2 * throttling.MIN_TARGET_INTERVALS:
            return False
        t_first, t_last = samples[0][0], samples[-1][0]
        if t_last - t_first < MIN_PLATEAU_SECONDS:
            return False
        cut = t_first + throttling.WARMUP_FRACTION * (t_last - t_first)
        mid = (cut + t_last) / 2
        first = [s for s in samples if cut <= s[0] <= mid]
        second = [s for s in samples if s[0] >= mid]
        r1, r2 = throttling.mean_rate(first), throttling.mean_rate(second)
        whole = throttling.plateau_rate([samples])
        if r1 is None or r2 is None or whole is None or whole <= 0:
            return False
        return abs(r1 - r2) <= STABLE * whole and whole <= CLEAR_FRACTION * control_rate

    return stop


DRAIN_FACTOR = 2.0  # the path counts as drained when a connect takes at most this many times its floor ...
DRAIN_SLACK = 0.02  # ... plus this many seconds
DRAIN_WAIT_MAX = 2.0  # seconds waited at most before one transfer (and a quarter of the time left)
DRAIN_GAP = 0.05  # seconds between two connects


@dataclass
class _Path:
    """The path's round trip with empty queues: the fastest TCP connect seen so far in this test."""

    floor: float | None = None

    def note(self, seconds: float | None) -> None:
        if seconds is not None and seconds > 0:
            self.floor = seconds if self.floor is None else min(self.floor, seconds)

    def drained(self, seconds: float) -> bool:
        return self.floor is None or seconds <= DRAIN_FACTOR * self.floor + DRAIN_SLACK


async def _connect_time(address: str, port: int, ctx: Context, timeout: float) -> float | None:
    """One TCP connect, reset at once: a round trip through the path's queues, before any SNI is sent."""
    t0 = ctx.monotonic()
    try:
        _, writer = await asyncio.wait_for(ctx.open_connection(address, port), timeout)
    except Exception:  # noqa: BLE001 - the transfer that follows measures and classifies the path
        return None
    seconds = ctx.monotonic() - t0
    _close(writer, reset=True)
    return seconds


async def _wait_drained(ep: Endpoint, ctx: Context, path: _Path, seconds: float) -> None:
    """Before a measured transfer: wait, by small connects, until the path's RTT is back near its floor.

    On a slow home link with a deep queue (bufferbloat), a stopped transfer leaves the server's
    whole window in the link's queue: the next transfer started 400 ms behind it at 2 Mbit/s and
    read as throttled. A policer's own queue (per flow class) is not on the connect's path.
    Bounded by ``seconds``; the first transfer's connect sets the floor, so it never waits.
    """
    end = ctx.monotonic() + seconds
    while path.floor is not None and (left := end - ctx.monotonic()) > 0:
        rtt = await _connect_time(ep.address, ep.port, ctx, left)
        if rtt is None:
            return
        path.note(rtt)
        if path.drained(rtt):
            return
        await asyncio.sleep(min(DRAIN_GAP, max(0.0, end - ctx.monotonic())))


async def _run(
    endpoints: Sequence[Endpoint], target_ep: Endpoint, ctx: Context, budget: _Budget, name: str,
    direction: Direction, rng: random.Random, plan: tuple[int, float, int, float], path: _Path,
) -> tuple[list[CheckResult[ThroughputDetails]], Flow, list[Flow]]:
    """One run: first control, target, remaining controls (congestion brackets the target).

    Each transfer starts once the path's queue has drained (:func:`_wait_drained`).
    """
    t_bytes, t_seconds, c_bytes, c_seconds = plan
    results: list[CheckResult[ThroughputDetails]] = []
    order = [endpoints[0], target_ep, *endpoints[1:]] if endpoints else [target_ep]
    control_rates: list[float] = []
    target_flow = Flow(samples=(), ok=False)
    control_flows: list[Flow] = []
    for ep in order:
        is_target = ep is target_ep
        await _wait_drained(ep, ctx, path, min(DRAIN_WAIT_MAX, (budget.deadline - ctx.monotonic()) / 4))
        left = budget.deadline - ctx.monotonic()
        want_bytes = budget.take(t_bytes if is_target else c_bytes)
        # The target's time is its transfer's (handshake excluded, within the budget): a
        # confirmation's handshake waited 0.9 s behind the first run's leftovers in a 64 kbit/s
        # policer's queue, leaving it 3 intervals.
        seconds, transfer = (left, min(t_seconds, left)) if is_target else (min(c_seconds, left), None)
        if want_bytes <= 0 or (seconds if transfer is None else transfer) <= 0.05:
            continue
        rates = [r for r in control_rates if r > 0]
        stop = stop_rule(statistics.median(rates) if rates else None) if is_target else None
        result = await measure_throughput(
            ep.address, ep.port, ep.sni, ep.url, ctx, role=ep.role, max_bytes=want_bytes,
            max_seconds=seconds, direction=direction, target=name, stop=stop, rng=rng, transfer_seconds=transfer,
        )
        budget.bytes -= result.details.bytes_used if direction == "down" else result.details.bytes
        path.note(result.details.connect_time)
        results.append(result)
        f = flow(result)
        if is_target:
            target_flow = f
        else:
            control_flows.append(f)
            rate = throttling.mean_rate(f.samples) if f.ok else None
            if rate is not None:
                control_rates.append(rate)
    return results, target_flow, control_flows


def _endpoints(
    target: Target, address: str, port: int, url: str, rng: random.Random, control_host: Endpoint | None
) -> tuple[Endpoint, list[Endpoint]]:
    target_ep = Endpoint("target", address, port, target.server_name, url)
    control_sni = target.control_sni or random_control_sni(rng)
    controls = [Endpoint("control", address, port, control_sni, url)]
    if target.server_name is not None:
        controls.append(Endpoint("control", address, port, None, url))
    if control_host is not None:
        controls.append(control_host)
    return target_ep, controls


async def _control_host(target: Target, ctx: Context) -> Endpoint | None:
    """The same-network control host's endpoint, if one is configured with a URL to fetch."""
    url = target.options.get("throughput_control_url")
    if not isinstance(url, str) or target.control_host is None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or target.control_host
    address = target.control_host
    if not _is_ip(address):
        from probe.checks import dns

        lookup = await dns.resolve(address, ctx.settings.resolvers[0], ctx, target=target.name, role="control")
        if not lookup.ok or not lookup.details.addresses:
            return None
        address = lookup.details.addresses[0]
    return Endpoint("control", address, parts.port or 443, None if _is_ip(host) else host, url)


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def default_url(target: Target) -> str:
    """The object to transfer: ``throughput_url``, else the first https URL, else the host's root."""
    if target.throughput_url:
        return target.throughput_url
    https = [u for u in target.urls if u.startswith("https:")]
    if https:
        return https[0]
    return f"https://{target.server_name or 'localhost'}/"


def directions_of(target: Target) -> tuple[Direction, ...]:
    """``options.throughput_direction``: "down" (default), "up" or "both"."""
    value = target.options.get("throughput_direction", "down")
    if value == "both":
        return ("down", "up")
    return ("up",) if value == "up" else ("down",)


MAX_RUNS = 3  # a first run, its confirmation, and one more (throttling.needs_another_run)
DRAIN_BYTES = 8192  # what a policer's queue may still hold of the first run's target
DRAIN_MAX = 1.0  # seconds


def _drain_pause(first: Flow, left: float) -> float:
    """Seconds to let a policer's queue drain before the confirmation run.

    Started at once, the confirmation's handshake waited 0.8 s behind the first
    run's leftovers at 64 kbit/s, and its rate read 10-30% above the policer's
    (cause not pinned down; after a 2 s pause it read right). At 2 Mbit/s the
    pause is 30 ms; an unthrottled target gets no confirmation at all.
    """
    rate = throttling.estimate_rate([first]) if first.ok else None
    pause = DRAIN_MAX if not rate else min(DRAIN_MAX, DRAIN_BYTES / rate)
    return max(0.0, min(pause, left / 4))


async def _decide_direction(
    target: Target, ctx: Context, target_ep: Endpoint, controls: list[Endpoint], direction: Direction,
    max_bytes: int, max_seconds: float, rng: random.Random,
) -> tuple[list[CheckResult[ThroughputDetails]], ThrottlingDecision]:
    t0 = ctx.monotonic()
    budget = _Budget(max_bytes, t0 + max_seconds)
    c_bytes = max(16384, max_bytes // 12)
    t_bytes = max(c_bytes, max_bytes * 2 // 9)
    plan = (t_bytes, 0.35 * max_seconds, c_bytes, 0.1 * max_seconds)
    results: list[CheckResult[ThroughputDetails]] = []
    runs: list[RunResult] = []
    target_flows: list[Flow] = []
    control_flows: list[Flow] = []
    path = _Path()
    for attempt in range(MAX_RUNS):
        if attempt:
            await asyncio.sleep(_drain_pause(target_flows[-1], budget.deadline - ctx.monotonic()))
        # The confirmation brings one control of its own and compares with all of them.
        order = controls if attempt == 0 else controls[:1]
        got, t_flow, c_flows = await _run(order, target_ep, ctx, budget, target.name, direction, rng, plan, path)
        if not got or all(r.role != "target" for r in got):
            break
        results += got
        target_flows.append(t_flow)
        control_flows += c_flows
        # A confirmation compares with every control so far: a fast control is over in a few
        # reads, and four or five control intervals cannot bring KS under 0.01 at all.
        runs.append(throttling.compare(t_flow, control_flows))
        # A third run only re-measures a confirmation whose target could not be compared.
        if not throttling.needs_confirmation(runs[-1]) or (attempt and not throttling.needs_another_run(runs)):
            break
    used_bytes = sum(r.details.bytes_used for r in results)
    decision = throttling.combine(
        runs, direction, target_flows, control_flows, bytes_used=used_bytes,
        seconds_used=round(ctx.monotonic() - t0, 3),
    )
    return results, decision


async def throttling_test(
    target: Target, ctx: Context, address: str, port: int = 443, url: str | None = None,
    *, rng: random.Random | None = None,
) -> tuple[list[CheckResult[ThroughputDetails]], ThrottlingDecision]:
    """Target SNI against controls differing only in the trigger; the decision per direction.

    Budget per direction measured: ``settings.throughput_max_bytes`` and
    ``throughput_max_seconds``.
    """
    rng = rng or random.Random(int.from_bytes(os.urandom(8), "big"))
    url = url or default_url(target)
    target_ep, controls = _endpoints(target, address, port, url, rng, await _control_host(target, ctx))
    directions = directions_of(target)
    settings = ctx.settings
    results: list[CheckResult[ThroughputDetails]] = []
    decisions: list[ThrottlingDecision] = []
    for direction in directions:
        got, decision = await _decide_direction(
            target, ctx, target_ep, controls, direction, settings.throughput_max_bytes,
            settings.throughput_max_seconds, rng,
        )
        results += got
        decisions.append(decision)
    return results, throttling.merge_directions(decisions)


# -- Command line (for the lab tests and bench/throttling_matrix.py, run inside a namespace) --------


def _main(argv: list[str] | None = None) -> int:
    """``python -m probe.checks.throughput --address A --sni S --url U``: one decision, as JSON."""
    import argparse
    import json
    import time

    from probe.core.config import Settings
    from probe.core.records import _jsonable

    parser = argparse.ArgumentParser(prog="python -m probe.checks.throughput")
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--sni", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--direction", choices=("down", "up", "both"), default="down")
    parser.add_argument("--max-bytes", type=int, default=Settings().throughput_max_bytes)
    parser.add_argument("--max-seconds", type=float, default=Settings().throughput_max_seconds)
    parser.add_argument("--samples", action="store_true", help="include every transfer's series")
    args = parser.parse_args(argv)
    ctx = Context(settings=Settings(throughput_max_bytes=args.max_bytes, throughput_max_seconds=args.max_seconds))
    target = Target(name=args.sni, service="lab", category="lab", host=args.sni, checks=("throughput",),
                    options={"throughput_direction": args.direction})
    t0 = time.monotonic()
    results, decision = asyncio.run(throttling_test(target, ctx, args.address, args.port, args.url))
    transfers = [
        {"role": r.role, "sni": r.details.sni, "direction": r.details.direction, "ok": r.ok, "failure": r.failure,
         "bytes": r.details.bytes, "bytes_used": r.details.bytes_used, "rate": r.details.rate_bytes_per_second,
         "connect": r.details.connect_time,
         "handshake": r.details.tls_handshake_time, "timed_out": r.details.timed_out,
         "stopped_early": r.details.stopped_early, "runtime": r.runtime,
         **({"samples": r.details.samples, "link_samples": r.details.link_samples} if args.samples else {})}
        for r in results
    ]
    print(json.dumps({"decision": _jsonable(decision.as_dict()), "transfers": transfers,
                      "wall_seconds": time.monotonic() - t0}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
