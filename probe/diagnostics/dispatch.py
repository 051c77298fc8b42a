"""The family's entry point: a target (and the addresses its DNS step found) in, CheckResults out.

Every check returns ``check="diagnostics"`` with ``details.kind``. Without raw sockets,
or with bad ``diag_*`` options, each requested kind returns a result with
``details.skipped`` and the reason (``failure: operation_not_permitted`` for a missing
capability, ``unknown_failure`` for bad options), so the record says why nothing ran.
The probes are blocking (scapy, select) and run in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from probe.core import failures
from probe.core.config import Target
from probe.core.context import Context
from probe.core.records import CheckResult, Role
from probe.diagnostics import KINDS, OptionError, Options, SkippedDetails
from probe.diagnostics.capability import raw_unavailable


def _result(kind_input: str, target: str, details: Any, start: float, runtime: float, role: Role,
            failure: str | None = None) -> CheckResult[Any]:
    return CheckResult(check="diagnostics", target=target, input=kind_input, ok=failure is None, failure=failure,
                       failed_operation=None, start_time=start, runtime=runtime, details=details, role=role,
                       timings={"diagnostics": runtime})


def skipped(kinds: Sequence[str], target: str, reason: str, failure: str, start: float,
            address: str | None = None, port: int | None = None, role: Role = "target") -> list[CheckResult[Any]]:
    return [_result(f"{kind}:{address or target}", target, SkippedDetails(kind, True, reason, address, port),
                    start, 0.0, role, failure) for kind in kinds]


def run_sync(kind: str, *, target: str, address: str, port: int, sni: str | None, control_sni: str,
             resolvers: Sequence[str], opts: Options, start: float, role: Role = "target",
             budget: Any = None) -> CheckResult[Any]:
    """One diagnostic, blocking. Raw-socket errors at run time become a skip, other errors a failure."""
    from probe.diagnostics.localise import Budget

    budget = budget or Budget(opts.max_probes)
    t0 = time.monotonic()
    label = f"{kind}:{address}:{port}" if kind != "dns_injection" else f"{kind}:{sni or target}"
    try:
        details: Any
        if kind == "localise":
            from probe.diagnostics.localise import run_localise

            details = run_localise(address, port, sni or address, control_sni, opts, budget)
        elif kind == "rst":
            from probe.diagnostics.rst import run_rst

            details = run_rst(address, opts.rst_closed_port or port, sni, opts.wait, baseline_port=port)
        else:
            from probe.diagnostics.dnsinject import run_dns

            details = run_dns(sni or target, resolvers, opts.dns_silent or (address,), opts.dns_wait)
    except PermissionError as exc:
        reason = f"raw sockets refused at run time: {exc.strerror or exc} (needs CAP_NET_RAW)"
        return _result(label, target, SkippedDetails(kind, True, reason, address, port), start,
                       time.monotonic() - t0, role, failures.PERMISSION_DENIED)
    except Exception as exc:  # noqa: BLE001 - recorded, never a crash
        return _result(label, target, SkippedDetails(kind, True, f"{type(exc).__name__}: {failures.scrub(str(exc))}",
                                                     address, port), start, time.monotonic() - t0, role,
                       failures.classify(exc))
    return _result(label, target, details, start, time.monotonic() - t0, role)


async def run(target: Target, ctx: Context, addresses: Sequence[str]) -> list[CheckResult[Any]]:
    """The diagnostics a target asked for, on its first address and first port."""
    start = ctx.clock()
    try:
        opts = Options.parse(target.options)
    except OptionError as exc:
        return skipped(KINDS, target.name, f"bad options: {exc}", failures.UNKNOWN_PREFIX, start)
    address = next(iter(addresses), None) or next(iter(target.addresses), None)
    port = target.ports[0] if target.ports else 443
    if address is None:
        return skipped(opts.kinds, target.name, "no address to probe (DNS gave none)", failures.UNKNOWN_PREFIX,
                       start)
    reason = raw_unavailable()
    if reason is not None:
        return skipped(opts.kinds, target.name, reason, failures.PERMISSION_DENIED, start, address, port)
    from probe.diagnostics.localise import Budget

    budget = Budget(opts.max_probes)
    resolvers = [r.host for r in ctx.settings.resolvers if r.scheme == "udp" and r.host]
    control_sni = target.control_sni or ctx.settings.control_sni
    out = []
    for kind in opts.kinds:
        out.append(await asyncio.to_thread(
            run_sync, kind, target=target.name, address=address, port=port, sni=target.server_name,
            control_sni=control_sni, resolvers=resolvers, opts=opts, start=ctx.clock(), budget=budget))
    return out
