"""Fetch every compression bomb of :mod:`tests.hostile.servers` in this process and print peak RSS.

Run as ``python -m tests.hostile.bomb_run`` (a fresh process, so that the peak is this run's):
one bomb at a time, then :data:`AT_ONCE` gzip bombs together, with the default 1 MiB body
cap. Prints one JSON object: ``baseline_kb`` (VmHWM once servers, bombs and imports are
ready), ``peak_kb`` (VmHWM at the end) and one row per fetch.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from probe.checks import http
from probe.core.config import Settings, Timeouts
from probe.core.context import Context
from probe.core.records import ProbeMeta
from tests.hostile.servers import BOMBS, bomb, hostile_app
from tests.loopback import Server

AT_ONCE = 8


def vm_hwm_kb() -> int:
    """Peak resident set size of this process so far (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def context() -> Context:
    timeouts = Timeouts(dns=5, connect=5, tls=5, http=30)
    return Context(settings=Settings(timeouts=timeouts), meta=ProbeMeta(probe_id="probe-hostile"))


async def main() -> dict[str, object]:
    for kind in BOMBS:
        bomb(kind)
    ctx = context()
    async with Server(hostile_app) as server:
        base = f"http://127.0.0.1:{server.port}"
        await http.fetch(f"{base}/titles", None, ctx, target="warm-up")
        baseline = vm_hwm_kb()
        paths = [f"/bomb/{kind}" for kind in (*BOMBS, "chunked")]
        results = [await http.fetch(base + path, None, ctx, target=path) for path in paths]
        results += await asyncio.gather(
            *(http.fetch(f"{base}/bomb/gzip", None, ctx, target=f"at-once-{i}") for i in range(AT_ONCE))
        )
    rows = [{"target": r.target, "failure": r.failure, "body_length": r.details.body_length,
             "truncated": r.details.body_truncated, "sha256": r.details.body_sha256} for r in results]
    return {"baseline_kb": baseline, "peak_kb": vm_hwm_kb(), "cap": ctx.settings.http_max_body, "rows": rows}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
