"""TCP check: connect to one address:port, time it, classify the failure."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from probe.core import failures
from probe.core.context import Context
from probe.core.records import CheckResult, Role


@dataclass(frozen=True)
class TCPDetails:
    address: str
    port: int


def endpoint(address: str, port: int) -> str:
    """``1.2.3.4:443`` or ``[2001:db8::1]:443``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


async def connect(
    address: str, port: int, ctx: Context, *, target: str, role: Role = "target"
) -> CheckResult[TCPDetails]:
    start, t0 = ctx.clock(), ctx.monotonic()
    failure: str | None = None
    try:
        _, writer = await asyncio.wait_for(
            ctx.open_connection(address, port), ctx.settings.timeouts.connect
        )
        local = writer.get_extra_info("sockname")
        if local:  # the source address of our own connection: one of the probe's (probe.core.privacy)
            ctx.own.learn(str(local[0]))
        writer.close()
    except Exception as exc:  # noqa: BLE001 - classified below
        failure = failures.classify(exc)
    elapsed = ctx.monotonic() - t0
    return CheckResult(
        check="tcp",
        target=target,
        input=endpoint(address, port),
        ok=failure is None,
        failure=failure,
        failed_operation=None if failure is None else "connect",
        start_time=start,
        runtime=elapsed,
        details=TCPDetails(address, port),
        role=role,
        timings={"connect": elapsed},
    )
