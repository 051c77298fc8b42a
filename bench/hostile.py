"""Hostile input figures: each bad targets file (time, peak memory, exit code), the title scan
of the hostile page, and peak RSS while fetching every compression bomb.

    python bench/hostile.py                  # this checkout
    python bench/hostile.py --root OTHER     # another checkout with tests/hostile (e.g. before the fix)

Everything runs in child processes on loopback; each child is bounded by ``--timeout`` and
killed after it (a "timeout" row: it would have run on).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile.files import BAD_FILES, HEAD, write_bad  # noqa: E402

TITLE_TIMING = """
import time
from probe.checks import http
from tests.hostile.servers import TITLES_PAGE
parse = getattr(http, "page_title", None) or getattr(http, "_title")
t0 = time.perf_counter()
parse(TITLES_PAGE)
print(time.perf_counter() - t0)
"""


def run(argv: list[str], root: Path, timeout: float) -> tuple[int | str, float, float, str, str]:
    """(exit code or "timeout", seconds, peak RSS in MB, stdout, stderr) of one child process."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, cwd=root, env=env, stdout=out, stderr=err, text=True)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # not proc.wait(): wait4 gives this child's own peak RSS
        seconds = time.monotonic() - t0
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        code: int | str = "timeout" if seconds >= timeout else proc.returncode
        return code, seconds, usage.ru_maxrss / 1024, out.read(), err.read()


def valid_file(path: Path, count: int) -> None:
    rows = "".join(f"  - {{name: t{i}, service: svc, category: x, addresses: [127.0.0.1], checks: [tcp]}}\n"
                   for i in range(count))
    path.write_text(HEAD + rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to measure (its probe and tests)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a child is killed")
    args = parser.parse_args()
    python = sys.executable

    print(f"root: {args.root}")
    print("bad targets files (probe targets validate FILE):")
    print(f"  {'file':<14} {'bytes':>9} {'exit':>8} {'seconds':>8} {'peak MB':>8}  message")
    with tempfile.TemporaryDirectory() as tmp:
        files = [(name, write_bad(name, Path(tmp))) for name in sorted(BAD_FILES)]
        valid = Path(tmp) / "valid-1mib.yaml"
        valid_file(valid, 12_000)
        files.append(("valid-1mib", valid))
        for name, path in files:
            code, seconds, peak, out, err = run([python, "-m", "probe", "targets", "validate", str(path)],
                                                args.root, args.timeout)
            size = path.stat().st_size if path.is_file() else 0
            message = (err.strip().splitlines() or out.strip().splitlines() or [""])[-1][:140]
            print(f"  {name:<14} {size:>9} {code!s:>8} {seconds:>8.2f} {peak:>8.1f}  {message}")

    code, seconds, _, out, err = run([python, "-c", TITLE_TIMING], args.root, args.timeout)
    figure = f"{float(out):.6f} s" if code == 0 else f"{code} after {seconds:.1f} s {err[-200:]}"
    print(f"title scan of the hostile page (140 KB of <title> tags): {figure}")

    code, seconds, peak, out, err = run([python, "-m", "tests.hostile.bomb_run"], args.root, args.timeout * 4)
    if code != 0:
        print(f"compression bombs: {code} after {seconds:.1f} s {err[-300:]}")
        return
    result = json.loads(out)
    rows = result["rows"]
    print(f"compression bombs: {len(rows)} fetches (5 kinds one at a time, then 8 gzip bombs at once), "
          f"cap {result['cap']} bytes, {seconds:.1f} s")
    print(f"  VmHWM before the bombs: {result['baseline_kb'] / 1024:.1f} MB; after: {result['peak_kb'] / 1024:.1f} MB; "
          f"growth: {(result['peak_kb'] - result['baseline_kb']) / 1024:.1f} MB")
    print(f"  failures: {sorted({str(r['failure']) for r in rows})}; "
          f"truncated at the cap: {sum(r['truncated'] and r['body_length'] == result['cap'] for r in rows)}"
          f"/{len(rows)}")


if __name__ == "__main__":
    main()
