"""Diagnostics in a 4-router lab with the censor at hop 3: localisation, RST fingerprint, DNS injection,
and the skip without CAP_NET_RAW. Each diagnostic runs in the client namespace as
``python -m probe.diagnostics`` and prints its check record."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.lab

CENSOR_HOP = 3
SERVER = "198.18.10.10"  # web.telegram.test
TARGET, CONTROL = "web.telegram.test", "control.test"


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces (CI runs as root)")
    from probe.lab import Lab

    with Lab(prefix="tdiag", hops=4, censor_hop=CENSOR_HOP) as running:
        yield running


def diag(lab: Any, kind: str, *args: str, wrap: list[str] | None = None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "probe.diagnostics", kind, *args]
    done = lab.exec(lab.ns_client, [*(wrap or []), *argv] if not wrap else [*wrap, " ".join(argv)], timeout=120)
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 1, done.stdout + done.stderr
    record: dict[str, Any] = records[0]
    assert record["test_name"] == "diagnostics"
    return record


LOCALISE = ["--address", SERVER, "--sni", TARGET, "--control-sni", CONTROL, "--opt", "diag_max_ttl=8",
            "--opt", "diag_throttle_path=/large?bytes=20000"]


def test_routers_answer_with_time_exceeded(lab: Any) -> None:
    keys = diag(lab, "localise", *LOCALISE)["test_keys"]
    assert keys["location"]["found"] is False
    assert keys["icmp_sources"] == {"1": "198.18.0.1", "2": "198.18.1.6", "3": "198.18.1.10", "4": "198.18.1.14"}
    assert keys["location"]["server_ttl"] == 5


@pytest.mark.parametrize(("technique", "params", "reaction"), [
    ("sni_rst", {}, "rst"),
    ("sni_drop", {}, "drop"),
    ("throttle_sni", {"rate_kbit": 128}, "throttle"),
])
def test_localisation_finds_the_censor_hop(lab: Any, technique: str, params: dict[str, Any], reaction: str) -> None:
    handle = lab.apply(technique, sni=TARGET, **params)
    try:
        record = diag(lab, "localise", *LOCALISE)
    finally:
        lab.remove(handle)
    loc = record["test_keys"]["location"]
    assert record["ok"] is True and record["test_keys"]["kind"] == "localise"
    assert (loc["found"], loc["reaction"], loc["censor_hop"], loc["sni_specific"]) == \
        (True, reaction, CENSOR_HOP, True), loc
    assert record["test_keys"]["probes"] <= 40
    assert loc["evidence"]


def test_injected_rst_is_flagged(lab: Any) -> None:
    handle = lab.apply("sni_rst", sni=TARGET)
    try:
        keys = diag(lab, "rst", "--address", SERVER, "--sni", TARGET)["test_keys"]
    finally:
        lab.remove(handle)
    assert keys["injected"] is True and keys["baseline"] == "same_flow"
    assert [(r["injected"], r["hops_away"], r["server_hops_away"]) for r in keys["rsts"]] == [(True, 2, 4)]


def test_server_rst_is_not_flagged(lab: Any) -> None:
    keys = diag(lab, "rst", "--address", SERVER, "--sni", TARGET, "--opt", "diag_rst_closed_port=8081")["test_keys"]
    assert keys["rsts"] and keys["injected"] is False
    assert keys["rsts"][0]["hops_away"] == keys["rsts"][0]["server_hops_away"] == 4


DNS = ["--address", "198.18.10.11", "--sni", "api.telegram.test", "--resolver", "198.18.0.1",
       "--opt", "diag_dns_wait=1.5"]


def test_clean_resolver_is_not_flagged(lab: Any) -> None:
    keys = diag(lab, "dns_injection", *DNS)["test_keys"]
    assert keys["injected"] is False
    resolver, silent = keys["queries"]
    assert resolver["answers"][0]["addresses"] == ["198.18.10.11"] and silent["answers"] == []


def test_on_path_dns_injector_is_caught(lab: Any) -> None:
    from probe.lab.topology import SINKHOLE

    handle = lab.apply("dns_inject", host="api.telegram.test", answer=SINKHOLE)
    try:
        keys = diag(lab, "dns_injection", *DNS)["test_keys"]
    finally:
        lab.remove(handle)
    assert keys["injected"] is True and keys["forged_addresses"] == [SINKHOLE]
    silent = keys["queries"][1]
    assert silent["silent"] and silent["injected"] and silent["answers"][0]["src"] == "198.18.10.11"


@pytest.mark.parametrize("kind", ["localise", "rst", "dns_injection"])
def test_without_cap_net_raw_every_kind_skips(lab: Any, kind: str) -> None:
    record = diag(lab, kind, *LOCALISE[:4], wrap=["capsh", "--drop=cap_net_raw", "--", "-c"])
    keys = record["test_keys"]
    assert record["ok"] is False and record["failure"] == "operation_not_permitted"
    assert keys["skipped"] is True and "CAP_NET_RAW" in keys["skip_reason"]


def test_pipeline_states_the_censor_hop_in_the_verdict(lab: Any) -> None:
    """Through `probe run`: an SNI RST is the `tls` verdict, and the diagnostics add where it comes from."""
    handle = lab.apply("sni_rst", sni="web.telegram.test")
    try:
        overrides = {"web.telegram.test": {"checks": ["dns", "tcp", "tls", "diagnostics"],
                                           "options": {"diag_kinds": ["localise", "rst"]}}}
        records = lab.run_probe(lab.targets_yaml(["web.telegram.test"], overrides=overrides))
    finally:
        lab.remove(handle)
    verdict = lab.verdicts(records)["web.telegram.test"]
    assert verdict["blocking"] == "tls"
    assert verdict["diagnostics_censorship"] is True
    assert f"hop {CENSOR_HOP}" in verdict["reason"]
    diag_ids = {r["id"] for r in records if r["test_name"] == "diagnostics"}
    assert diag_ids and diag_ids <= set(verdict["evidence"])
