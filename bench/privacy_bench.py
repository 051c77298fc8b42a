"""What scrubbing the probe's own addresses costs per record (probe.core.privacy.scrub_record).

Every record passes through the scrubber once, when ``TargetOutcome.records`` makes it. This
prints the CPU time per record (``time.process_time``, so other load on the machine does not count)
for three cases: no address known (nothing to do), a clean record, and a record in which a page
echoed the client's address in its title and headers. Records are built with the real
``check_record`` from a typical HTTP result with ``--headers`` response headers.

    python bench/privacy_bench.py [--n 20000] [--headers 16]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from probe.checks.http import HTTPDetails
from probe.core.privacy import OwnAddresses, own_addresses, scrub_record
from probe.core.records import CheckResult, ProbeMeta, check_record

CLIENT = "198.18.0.2"


def http_record(headers: int, echo: bool) -> dict[str, Any]:
    shown = CLIENT if echo else "198.18.30.30"
    values = {"date": "Mon, 30 Nov 2026 07:23:46 GMT", "server": "nginx/1.25.3", "x-client-ip": shown,
              "set-cookie": f"visitor={shown}; Path=/", "content-type": "text/html; charset=utf-8"}
    values.update({f"x-header-{i}": f"value-{i}" for i in range(max(0, headers - len(values)))})
    details = HTTPDetails(url="https://web.telegram.test/", address="198.18.10.1", status=200,
                          http_version="HTTP/1.1", headers=values, header_count=len(values),
                          body_length=5120, body_sha256="ab" * 32, title=f"Your IP address is {shown}")
    result = CheckResult("http", "web.telegram.test", "https://web.telegram.test/ @ 198.18.10.1:443", True, None,
                         None, time.time(), 0.05, details, timings={"http_round_trip": 0.05})
    return check_record(result, ProbeMeta(probe_id="bench"), "telegram", "messaging")


def per_record_us(record: dict[str, Any], own: OwnAddresses, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        scrub_record(record, own)
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--headers", type=int, default=16)
    args = parser.parse_args()
    own = own_addresses([CLIENT, "2001:db8:1:2::abcd", "fe80::1"])
    cases = (("no_address_known", http_record(args.headers, False), OwnAddresses()),
             ("clean_record", http_record(args.headers, False), own),
             ("echoing_record", http_record(args.headers, True), own))
    for name, record, addresses in cases:
        print(f"{name}_us_per_record: {per_record_us(record, addresses, args.n):.1f}")


if __name__ == "__main__":
    main()
