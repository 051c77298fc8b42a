"""Status page benchmark: a day of verdicts in the store, the page built and rendered; time and memory.

    .venv/bin/python bench/status_page.py                  # 70 targets every 5 minutes for a day
    .venv/bin/python bench/status_page.py --targets 500    # a large configuration

Prints the time of the first render (matplotlib imported then), of a second one, and the process's
RSS before and after, so that the cost of the plots in a volunteer's daemon is a measured figure.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probe.core.records import CheckResult, ProbeMeta, Verdict, check_record, verdict_record  # noqa: E402
from probe.service.status import render_html, view_from_store  # noqa: E402
from probe.storage.store import Store  # noqa: E402


@dataclass(frozen=True)
class Rate:
    rate_bytes_per_second: float


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill(path: Path, targets: int, runs: int, now: float) -> int:
    meta = ProbeMeta(probe_id="bench")
    count = 0
    with Store(path, retention_days=None) as store:
        for k in range(runs):
            t = now - 86400 + k * 86400 / runs
            records = []
            for i in range(targets):
                name = f"t{i}"
                blocked = i % 7 == 0 and runs // 3 < k < 2 * runs // 3
                records.append(verdict_record(Verdict(
                    target=name, service=f"s{i % 10}", category="messaging", accessible=not blocked,
                    blocking="tcp_ip" if blocked else False, rule="r", reason="connect reset", start_time=t), meta))
                if i % 10 == 0:
                    for role, rate in (("target", 2e4 if blocked else 1e6), ("control", 1.2e6)):
                        records.append(check_record(CheckResult(
                            check="throughput", target=name, input="x", ok=True, failure=None, failed_operation=None,
                            start_time=t, runtime=1.0, details=Rate(rate), role=role), meta, f"s{i % 10}", "messaging"))  # type: ignore[arg-type]
            store.append(records)
            count += len(records)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=70)
    parser.add_argument("--interval", type=float, default=300.0, help="seconds between runs of a target")
    args = parser.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.sqlite"
        records = fill(path, args.targets, int(86400 / args.interval), now)
        before = rss_mb()
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            page = render_html(view_from_store(path, since=now - 86400, now=now))
            timings.append(time.perf_counter() - start)
        after = rss_mb()
    print(f"records in the store: {records} ({args.targets} targets every {args.interval:.0f} s for a day)")
    print(f"first render (imports matplotlib): {timings[0]:.2f} s; second render: {timings[1]:.2f} s; "
          f"page {len(page) / 1e3:.0f} kB")
    print(f"RSS before the first render {before:.0f} MB, after {after:.0f} MB (+{after - before:.0f} MB)")


if __name__ == "__main__":
    main()
