"""Run every target once: control targets first, then the rest, concurrently under a limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from probe.analysis.verdict import Controls
from probe.checks import control
from probe.core.config import Config, Target
from probe.core.context import Context
from probe.pipeline import TargetOutcome, measure_target, network_ok, prepare

OnOutcome = Callable[[TargetOutcome], None]
T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed: it halves the event loop's share of a TLS check's CPU
    (bench/tls_handshakes.py), and falls back to asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def _measure_all(
    targets: Sequence[Target], ctx: Context, controls: Controls, limit: asyncio.Semaphore,
    on_outcome: OnOutcome | None,
) -> list[TargetOutcome]:
    async def one(target: Target) -> TargetOutcome:
        async with limit:
            outcome = await measure_target(target, ctx, controls)
        if on_outcome is not None:
            on_outcome(outcome)
        return outcome

    return list(await asyncio.gather(*(one(t) for t in targets)))


async def run_once(
    config: Config, ctx: Context, on_outcome: OnOutcome | None = None
) -> list[TargetOutcome]:
    """Measure all targets of ``config``; outcomes come back in the config's order."""
    helper = config.settings.test_helper
    await asyncio.gather(prepare(config.targets), control.whoami(helper, ctx) if helper else asyncio.sleep(0))
    limit = asyncio.Semaphore(config.settings.concurrency)
    control_targets = [t for t in config.targets if t.control]
    others = [t for t in config.targets if not t.control]
    first = await _measure_all(control_targets, ctx, Controls(), limit, on_outcome)
    controls = Controls(network_ok=network_ok(first))
    rest = await _measure_all(others, ctx, controls, limit, on_outcome)
    by_name = {o.target.name: o for o in first + rest}
    return [by_name[t.name] for t in config.targets]
