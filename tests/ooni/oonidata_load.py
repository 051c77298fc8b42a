"""Run by OONI's own reader, in its own venv: load every measurement of a JSONL file, print a summary.

    /var/tmp/probe-oonidata-venv/bin/python tests/ooni/oonidata_load.py measurements.jsonl

For each line: ``oonidata.dataclient.load_measurement``, then what the loaded object (not the
JSON) says: its class, the expected class for its ``test_name`` and the template entries as
oonidata parsed them. Prints one JSON object: ``{"loaded": n, "failed": [...], "measurements": [...]}``.
This file imports only oonidata and the standard library (never ``probe``).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _summary(msmt: Any, expected: str) -> dict[str, Any]:
    tk = msmt.test_keys
    return {
        "class": type(msmt).__name__,
        "expected_class": expected,
        "test_keys_class": type(tk).__name__,
        "measurement_uid": msmt.measurement_uid,
        "input": msmt.input,
        "probe_ip": msmt.probe_ip,
        "measurement_start_time": msmt.measurement_start_time,
        "failure": getattr(tk, "failure", None),
        "queries": [
            {"hostname": q.hostname, "query_type": q.query_type, "failure": q.failure, "rcode": q.rcode,
             "transaction_id": q.transaction_id,
             "answers": [a.ipv4 or a.ipv6 or a.hostname for a in (q.answers or [])]}
            for q in (getattr(tk, "queries", None) or [])
        ],
        "tcp_connect": [
            {"ip": c.ip, "port": c.port, "success": c.status.success, "failure": c.status.failure,
             "transaction_id": c.transaction_id}
            for c in (getattr(tk, "tcp_connect", None) or [])
        ],
        "tls_handshakes": [
            {"address": h.address, "server_name": h.server_name, "failure": h.failure,
             "transaction_id": h.transaction_id}
            for h in (getattr(tk, "tls_handshakes", None) or [])
        ],
        "requests": [
            {"url": r.request.url if r.request else None, "failure": r.failure,
             "code": r.response.code if r.response else None, "transaction_id": r.transaction_id}
            for r in (getattr(tk, "requests", None) or [])
        ],
        "network_events": len(getattr(tk, "network_events", None) or []),
    }


def main(path: str) -> int:
    from oonidata.dataclient import load_measurement
    from oonidata.models.nettests import NETTEST_MODELS
    from oonidata.models.nettests.base_measurement import BaseMeasurement

    loaded: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    with open(path, encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            raw = json.loads(line)
            expected = NETTEST_MODELS.get(raw.get("test_name"), BaseMeasurement).__name__
            try:
                msmt = load_measurement(msmt=raw)
            except Exception as exc:  # noqa: BLE001 - reported, the test fails on it
                failed.append({"line": str(n), "error": f"{type(exc).__name__}: {exc}"[:2000]})
                continue
            loaded.append(_summary(msmt, expected))
    print(json.dumps({"loaded": len(loaded), "failed": failed, "measurements": loaded}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
