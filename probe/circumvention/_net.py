"""Shared plumbing: bounded TCP/UDP exchanges and the mapping from what happened to a status.

A check is a linear coroutine (``body``) that talks to the server through a
:class:`Session` and returns a :class:`Finding`, or raises. :func:`run` turns
exceptions into statuses with one rule set for the whole family:

- connect fails (timeout, RST, refused, unreachable): ``blocked``;
- RST after our first protocol packet: ``blocked`` (``connection_reset``);
- no answer, or a clean close, after our packet: ``silent`` when the protocol is
  silent by design for a client without the right secret (the caller says why),
  else ``blocked`` (``generic_timeout`` / ``eof_error``);
- anything else: ``inconclusive``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from probe.circumvention import (
    ANSWERED,
    BLOCKED,
    INCONCLUSIVE,
    SILENT,
    CircumventionDetails,
    make_result,
)
from probe.core import failures
from probe.core.context import Context
from probe.core.records import CheckResult, Role

#: Failures that mean "the network did not let us talk to the server".
_BLOCKING_FAILURES = frozenset({
    failures.GENERIC_TIMEOUT, failures.CONNECTION_RESET, failures.CONNECTION_REFUSED,
    failures.HOST_UNREACHABLE, failures.NETWORK_UNREACHABLE,
})


class Finding(Exception):
    """A conclusion reached inside a check body (returned on success, raised otherwise)."""

    def __init__(self, status: str, evidence: str, *, failure: str | None = None,
                 operation: failures.Operation | None = None, info: Mapping[str, Any] | None = None) -> None:
        super().__init__(evidence)
        self.status, self.evidence, self.failure, self.operation = status, evidence, failure, operation
        self.info = dict(info or {})


def answered(evidence: str, **info: Any) -> Finding:
    return Finding(ANSWERED, evidence, info=info)


def unexpected(evidence: str, **info: Any) -> Finding:
    """The server answered, but not in this protocol: something else listens there."""
    return Finding(INCONCLUSIVE, evidence, failure=f"{failures.UNKNOWN_PREFIX}: unexpected reply",
                   operation="read", info=info)


class _Silence(Exception):
    def __init__(self, operation: failures.Operation, closed: bool, waited: float) -> None:
        super().__init__("closed" if closed else "silence")
        self.operation, self.closed, self.waited = operation, closed, waited


@dataclass
class Session:
    """Per-check I/O with bounded waits and phase timings."""

    ctx: Context
    timeout: float
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    sent_first: bool = False
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _readers: dict[int, asyncio.StreamReader] = field(default_factory=dict)

    def _mark(self, phase: str, t0: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + self.ctx.monotonic() - t0

    async def connect(self, address: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        t0 = self.ctx.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                self.ctx.open_connection(address, port), self.ctx.settings.timeouts.connect)
        except Exception as exc:
            raise failures.ProbeError(failures.classify(exc), "connect", str(exc)) from exc
        finally:
            self._mark("connect", t0)
        self._closers.append(writer.close)
        self._readers[id(writer)] = reader  # a failed send reads once to learn why (failures.write_error)
        return reader, writer

    async def send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.timeout)
        except Exception as exc:
            raise await failures.write_error(exc, self._readers.get(id(writer))) from exc
        self.sent_first = True

    async def read_exactly(self, reader: asyncio.StreamReader, n: int, phase: str = "read",
                           operation: failures.Operation = "read") -> bytes:
        t0 = self.ctx.monotonic()
        try:
            return await asyncio.wait_for(reader.readexactly(n), self.timeout)
        except TimeoutError as exc:
            raise _Silence(operation, False, self.timeout) from exc
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise failures.ProbeError(failures.EOF_ERROR, operation, "truncated reply") from exc
            raise _Silence(operation, True, self.ctx.monotonic() - t0) from exc
        except Exception as exc:
            raise failures.ProbeError(failures.classify(exc), operation, str(exc)) from exc
        finally:
            self._mark(phase, t0)

    async def read_line(self, reader: asyncio.StreamReader, limit: int = 8192) -> bytes:
        t0 = self.ctx.monotonic()
        try:
            line = await asyncio.wait_for(reader.readline(), self.timeout)
        except TimeoutError as exc:
            raise _Silence("read", False, self.timeout) from exc
        except Exception as exc:
            raise failures.ProbeError(failures.classify(exc), "read", str(exc)) from exc
        finally:
            self._mark("read", t0)
        if not line:
            raise _Silence("read", True, self.ctx.monotonic() - t0)
        return line[:limit]

    async def udp_exchange(self, address: str, port: int, payload: bytes,
                           accept: Callable[[bytes], bool], attempts: int = 2) -> bytes:
        """Send ``payload`` (again, up to ``attempts`` times) until a datagram passes ``accept``."""
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[bytes | Exception] = asyncio.Queue(maxsize=64)

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                with contextlib.suppress(asyncio.QueueFull):
                    got.put_nowait(data)

            def error_received(self, exc: Exception) -> None:  # ICMP port unreachable and friends
                with contextlib.suppress(asyncio.QueueFull):
                    got.put_nowait(exc)

        t0 = self.ctx.monotonic()
        try:
            transport, _ = await loop.create_datagram_endpoint(_Proto, remote_addr=(address, port))
        except Exception as exc:
            raise failures.ProbeError(failures.classify(exc), "connect", str(exc)) from exc
        self._closers.append(transport.close)
        try:
            per_try = self.timeout / max(1, attempts)
            for _ in range(max(1, attempts)):
                transport.sendto(payload)
                self.sent_first = True
                deadline = loop.time() + per_try
                for _ in range(64):  # bounded: at most 64 datagrams looked at per try
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(got.get(), left)
                    except TimeoutError:
                        break
                    if isinstance(item, Exception):
                        raise failures.ProbeError(failures.classify(item), "read", str(item)) from item
                    if accept(item):
                        return item
            raise _Silence("read", False, self.timeout)
        finally:
            self._mark("exchange", t0)

    def close(self) -> None:
        for closer in self._closers:
            with contextlib.suppress(Exception):
                closer()


async def run(
    protocol: str, transport: str, address: str, port: int, ctx: Context, *,
    target: str, role: Role, secret_sha256: str | None, silent_by_design: str | None,
    body: Callable[[Session], Awaitable[Finding]], timeout: float | None = None,
) -> CheckResult[CircumventionDetails]:
    """Run one check body and classify its outcome (rules in the module docstring).

    ``silent_by_design``: why silence is this server's normal answer to us (e.g. "no
    tls-auth key"), or None when a working server must answer.
    """
    start, t0 = ctx.clock(), ctx.monotonic()
    session = Session(ctx, timeout if timeout is not None else ctx.settings.timeouts.tls)
    failure: str | None = None
    operation: str | None = None
    try:
        finding = await body(session)
    except Finding as exc:
        finding = exc
    except _Silence as exc:
        what = "closed the connection without answering" if exc.closed else \
            f"sent nothing back within {exc.waited:.1f}s"
        if silent_by_design:
            finding = Finding(SILENT, f"the server {what}: silent by design ({silent_by_design})")
        else:
            fail = failures.EOF_ERROR if exc.closed else failures.GENERIC_TIMEOUT
            finding = Finding(BLOCKED, f"connected, but the server {what} after our first packet", failure=fail,
                              operation=exc.operation)
    except Exception as exc:  # noqa: BLE001 - every exception is a measurement result
        fail = failures.classify(exc)
        op = failures.operation_of(exc, "read")
        if fail in _BLOCKING_FAILURES:
            where = "connecting" if op == "connect" else "after our first protocol packet"
            finding = Finding(BLOCKED, f"{fail} while {where}" if op == "connect" else f"{fail} {where}",
                              failure=fail, operation=op)
        else:
            finding = Finding(INCONCLUSIVE, f"{fail} during {op}", failure=fail, operation=op)
    finally:
        session.close()
    if finding.status != ANSWERED:
        failure, operation = finding.failure, finding.operation
    details = CircumventionDetails(
        protocol=protocol, status=finding.status, transport=transport, address=address, port=port,
        evidence=finding.evidence, secret_sha256=secret_sha256, info={**session.info, **finding.info},
    )
    return make_result(details, target=target, role=role, start=start, runtime=ctx.monotonic() - t0,
                       failure=failure, failed_operation=operation, timings=session.timings)
