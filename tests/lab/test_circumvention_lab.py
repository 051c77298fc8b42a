"""Circumvention checks through a censor, against real servers in a network namespace.

Topology (tests.circumvention_servers.censored_path): this process ── censor
namespace (iptables FORWARD rules) ── server namespace, 198.18.<n>.0/29 only, and the
server namespace has no other route. In the server namespace: OpenVPN 2.6 (UDP, UDP +
tls-auth, TCP + tls-auth), wireguard-go, a private Tor relay with an obfs4 transport
(OR, Dir, obfs4 ports; never published), microsocks (open, with auth), tinyproxy (open,
with auth), mtprotoproxy (fake-TLS secret, stub data centre).

For each protocol, three cases: reachable → answered; censored (by port, address or
first-packet signature, with DROP or a TCP reset) → blocked with the right failure;
server without the needed secret → silent (SOCKS and HTTP proxies have no silent mode:
their third case is "wants credentials", still answered).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.analysis import circumvention as family_verdict
from probe.circumvention import ANSWERED, BLOCKED, SILENT, dispatch, tor
from probe.circumvention.mtproto import check_mtproto
from probe.circumvention.openvpn import TLSAuth, check_openvpn
from probe.circumvention.proxies import check_http_connect, check_socks5
from probe.circumvention.wireguard import check_wireguard
from probe.core import failures
from probe.core.config import Target
from probe.core.context import Context
from tests.circumvention_servers import (
    MTPROXY_SCRIPT,
    REPO,
    Path3,
    TorRelay,
    censored_path,
    have,
    key_hex,
    link,
    microsocks_argv,
    mtproxy_argv,
    mtproxy_config,
    openvpn_key,
    openvpn_server_config,
    spawn,
    tinyproxy_argv,
    tinyproxy_config,
    tor_relay,
    wg_keypair,
    wireguard_server,
)
from tests.conftest import make_context

pytestmark = pytest.mark.lab

WAIT = 1.5
NEEDED = ("openvpn", "wireguard-go", "wg", "tor", "obfs4proxy", "microsocks", "tinyproxy", "iptables")
OVPN_UDP, OVPN_UDP_AUTH, OVPN_TCP_AUTH, WG_PORT = 1194, 1195, 1196, 51820
SOCKS, SOCKS_AUTH, HTTP, HTTP_AUTH, MTPROXY = 1080, 1081, 8888, 8889, 4433
MT_KEY = key_hex("lab-proxy")
MT_SECRET = "ee" + MT_KEY + b"proxy.test".hex()


@dataclasses.dataclass(frozen=True)
class Lab:
    path: Path3
    ovpn_key: str
    wg_client_private: str
    wg_server_public: str
    relay: TorRelay | None = None

    @property
    def server(self) -> str:
        return self.path.server


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    missing = [b for b in NEEDED if not have(b)]
    if missing or not MTPROXY_SCRIPT.exists():
        pytest.skip(f"missing servers: {', '.join(missing) or 'mtprotoproxy'} (see docs/circumvention.md)")
    work = tmp_path_factory.mktemp("circ-lab")
    prefix = f"pc{os.getpid() % 10000}"
    with censored_path(prefix, 230 + os.getpid() % 20) as path:
        ns, srv = path.server_ns, path.server
        key = openvpn_key(work)
        ovpn = [
            openvpn_server_config(work, address=srv, port=OVPN_UDP, proto="udp4", dev="pvu", tls_auth=None),
            openvpn_server_config(work, address=srv, port=OVPN_UDP_AUTH, proto="udp4", dev="pva", tls_auth=key),
            openvpn_server_config(work, address=srv, port=OVPN_TCP_AUTH, proto="tcp4-server", dev="pvt", tls_auth=key),
        ]
        s_priv, s_pub = wg_keypair()
        c_priv, c_pub = wg_keypair()

        def started(log: Path) -> Any:
            return lambda: "Initialization Sequence Completed" in log.read_text(errors="replace")

        def listening(port: int) -> Any:
            return lambda: f":{port} " in os.popen(f"ip netns exec {ns} ss -ltnH").read()

        with (
            spawn(["openvpn", "--config", str(ovpn[0])], work / "o0.log", ns=ns, ready=started(work / "o0.log")),
            spawn(["openvpn", "--config", str(ovpn[1])], work / "o1.log", ns=ns, ready=started(work / "o1.log")),
            spawn(["openvpn", "--config", str(ovpn[2])], work / "o2.log", ns=ns, ready=started(work / "o2.log")),
            wireguard_server(ns, f"{prefix}wg", WG_PORT, s_priv, c_pub, work),
            spawn(microsocks_argv(srv, SOCKS), work / "s0.log", ns=ns, ready=listening(SOCKS)),
            spawn(microsocks_argv(srv, SOCKS_AUTH, auth=True), work / "s1.log", ns=ns, ready=listening(SOCKS_AUTH)),
            spawn(tinyproxy_argv(tinyproxy_config(work, srv, HTTP, auth=False)), work / "h0.log", ns=ns,
                  ready=listening(HTTP)),
            spawn(tinyproxy_argv(tinyproxy_config(work, srv, HTTP_AUTH, auth=True)), work / "h1.log", ns=ns,
                  ready=listening(HTTP_AUTH)),
            spawn(mtproxy_argv(mtproxy_config(work, srv, MTPROXY, MT_KEY), srv, MTPROXY), work / "mt.log", ns=ns,
                  cwd=REPO, ready=listening(MTPROXY)),
            tor_relay(ns, srv, work) as relay,
        ):
            yield Lab(path, key.read_text(), c_priv, s_pub, relay)


@pytest.fixture
def censor(lab: Lab) -> Iterator[Path3]:
    lab.path.clear()
    try:
        yield lab.path
    finally:
        lab.path.clear()


@pytest.fixture
def lctx(tmp_path: Path) -> Context:
    ca = tmp_path / "none.pem"
    return make_context(ca, ca_bundle=None)


def _assert(result: Any, status: str, failure: str | None = None) -> None:
    assert result.details.status == status, (result.details.evidence, result.failure)
    if failure is not None:
        assert result.failure == failure, result.details.evidence
    if status == SILENT:
        assert result.failure is None
    verdict = family_verdict.decide([result])
    assert verdict is not None
    assert verdict.blocking == ("circumvention" if status == BLOCKED else False)


# -- OpenVPN -------------------------------------------------------------------------------------


async def test_openvpn_answers(lab: Lab, censor: Path3, lctx: Context) -> None:
    _assert(await check_openvpn(lab.server, OVPN_UDP, lctx, target="o", timeout=WAIT), ANSWERED)
    key = TLSAuth.from_text(lab.ovpn_key)
    _assert(await check_openvpn(lab.server, OVPN_TCP_AUTH, lctx, target="o", transport="tcp", tls_auth=key,
                                timeout=WAIT), ANSWERED)


async def test_openvpn_udp_signature_drop_is_blocked(lab: Lab, censor: Path3, lctx: Context) -> None:
    # u32: the first UDP payload byte is 0x38, P_CONTROL_HARD_RESET_CLIENT_V2 with key id 0.
    censor.censor("-p", "udp", "-m", "u32", "--u32", "0>>22&0x3C@8>>24=0x38", "-j", "DROP")
    key = TLSAuth.from_text(lab.ovpn_key)
    _assert(await check_openvpn(lab.server, OVPN_UDP_AUTH, lctx, target="o", tls_auth=key, timeout=WAIT),
            BLOCKED, failures.GENERIC_TIMEOUT)


async def test_openvpn_tcp_signature_reset_is_blocked(lab: Lab, censor: Path3, lctx: Context) -> None:
    # u32: the third byte of the TCP payload (after the 2-byte length) is the opcode 0x38.
    censor.censor("-p", "tcp", "-m", "u32", "--u32", "0>>22&0x3C@12>>26&0x3C@0>>8&0xFF=0x38",
                  "-j", "REJECT", "--reject-with", "tcp-reset")
    key = TLSAuth.from_text(lab.ovpn_key)
    _assert(await check_openvpn(lab.server, OVPN_TCP_AUTH, lctx, target="o", transport="tcp", tls_auth=key,
                                timeout=WAIT), BLOCKED, failures.CONNECTION_RESET)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_openvpn_tls_auth_without_key_is_silent(lab: Lab, censor: Path3, lctx: Context,
                                                      transport: str) -> None:
    port = OVPN_UDP_AUTH if transport == "udp" else OVPN_TCP_AUTH
    _assert(await check_openvpn(lab.server, port, lctx, target="o", transport=transport,  # type: ignore[arg-type]
                                timeout=WAIT), SILENT)


# -- WireGuard ------------------------------------------------------------------------------------


async def test_wireguard_answers(lab: Lab, censor: Path3, lctx: Context) -> None:
    _assert(await check_wireguard(lab.server, WG_PORT, lctx, target="w", server_public_key=lab.wg_server_public,
                                  client_private_key=lab.wg_client_private, timeout=WAIT), ANSWERED)


async def test_wireguard_signature_drop_is_blocked(lab: Lab, censor: Path3, lctx: Context) -> None:
    # The handshake initiation: UDP payload starting 01 00 00 00, IP length 20 + 8 + 148.
    censor.censor("-p", "udp", "-m", "length", "--length", "176", "-m", "u32", "--u32",
                  "0>>22&0x3C@8=0x01000000", "-j", "DROP")
    _assert(await check_wireguard(lab.server, WG_PORT, lctx, target="w", server_public_key=lab.wg_server_public,
                                  client_private_key=lab.wg_client_private, timeout=WAIT),
            BLOCKED, failures.GENERIC_TIMEOUT)


async def test_wireguard_public_key_only_is_silent(lab: Lab, censor: Path3, lctx: Context) -> None:
    _assert(await check_wireguard(lab.server, WG_PORT, lctx, target="w", server_public_key=lab.wg_server_public,
                                  timeout=WAIT), SILENT)


# -- MTProto ---------------------------------------------------------------------------------------


async def test_mtproto_fake_tls_answers(lab: Lab, censor: Path3, lctx: Context) -> None:
    result = await check_mtproto(link(lab.server, MTPROXY, MT_SECRET), lctx, target="m", timeout=WAIT)
    _assert(result, ANSWERED)
    assert result.details.info["server_hmac"] is True and result.details.info["rpc_ok"] is True


async def test_mtproto_fake_tls_hello_signature_reset_is_blocked(lab: Lab, censor: Path3, lctx: Context) -> None:
    # The fixed first 11 bytes of every fake-TLS ClientHello (record of 512 bytes, TLS 1.2 legacy version).
    censor.censor("-p", "tcp", "-m", "string", "--algo", "bm", "--hex-string", "|1603010200010001fc0303|",
                  "-j", "REJECT", "--reject-with", "tcp-reset")
    _assert(await check_mtproto(link(lab.server, MTPROXY, MT_SECRET), lctx, target="m", timeout=WAIT),
            BLOCKED, failures.CONNECTION_RESET)


async def test_mtproto_address_drop_is_blocked(lab: Lab, censor: Path3, lctx: Context) -> None:
    censor.censor("-d", lab.server, "-p", "tcp", "--dport", str(MTPROXY), "-j", "DROP")
    result = await check_mtproto(link(lab.server, MTPROXY, "dd" + MT_KEY), lctx, target="m", timeout=WAIT)
    _assert(result, BLOCKED, failures.GENERIC_TIMEOUT)
    assert result.failed_operation == "connect"


async def test_mtproto_wrong_secret_is_silent(lab: Lab, censor: Path3, lctx: Context) -> None:
    wrong = "ee" + key_hex("not this proxy") + b"proxy.test".hex()
    _assert(await check_mtproto(link(lab.server, MTPROXY, wrong), lctx, target="m", timeout=WAIT), SILENT)


# -- SOCKS5 and HTTP CONNECT -----------------------------------------------------------------------


async def test_socks5_answers(lab: Lab, censor: Path3, lctx: Context) -> None:
    _assert(await check_socks5(lab.server, SOCKS, lctx, target="s", timeout=WAIT), ANSWERED)


async def test_socks5_greeting_signature_reset_is_blocked(lab: Lab, censor: Path3, lctx: Context) -> None:
    censor.censor("-p", "tcp", "--dport", str(SOCKS), "-m", "string", "--algo", "bm", "--hex-string", "|050100|",
                  "-j", "REJECT", "--reject-with", "tcp-reset")
    _assert(await check_socks5(lab.server, SOCKS, lctx, target="s", timeout=WAIT), BLOCKED, failures.CONNECTION_RESET)


async def test_socks5_port_reset_is_blocked(lab: Lab, censor: Path3, lctx: Context) -> None:
    censor.censor("-p", "tcp", "--dport", str(SOCKS), "-j", "REJECT", "--reject-with", "tcp-reset")
    result = await check_socks5(lab.server, SOCKS, lctx, target="s", timeout=WAIT)
    _assert(result, BLOCKED, failures.CONNECTION_REFUSED)  # an RST to the SYN reads as "refused"
    assert result.failed_operation == "connect"


async def test_socks5_wanting_credentials_answers(lab: Lab, censor: Path3, lctx: Context) -> None:
    result = await check_socks5(lab.server, SOCKS_AUTH, lctx, target="s", timeout=WAIT)
    _assert(result, ANSWERED)
    assert result.details.info["method"] == 0xFF


async def test_http_connect_answers(lab: Lab, censor: Path3, lctx: Context) -> None:
    _assert(await check_http_connect(lab.server, HTTP, lctx, target="h", timeout=WAIT), ANSWERED)


async def test_http_connect_signature_reset_is_blocked(lab: Lab, censor: Path3, lctx: Context) -> None:
    censor.censor("-p", "tcp", "-m", "string", "--algo", "bm", "--string", "CONNECT ",
                  "-j", "REJECT", "--reject-with", "tcp-reset")
    _assert(await check_http_connect(lab.server, HTTP, lctx, target="h", timeout=WAIT),
            BLOCKED, failures.CONNECTION_RESET)


async def test_http_connect_wanting_credentials_answers(lab: Lab, censor: Path3, lctx: Context) -> None:
    result = await check_http_connect(lab.server, HTTP_AUTH, lctx, target="h", timeout=WAIT)
    _assert(result, ANSWERED)
    assert result.details.info["status"] == 407


# -- Tor: OR port, Dir port, obfs4 -----------------------------------------------------------------


async def test_tor_or_and_dir_answer(lab: Lab, censor: Path3, lctx: Context) -> None:
    assert lab.relay is not None
    _assert(await tor.check_tor_or(lab.server, lab.relay.or_port, lctx, target="t", timeout=WAIT), ANSWERED)
    result = await tor.check_tor_dir(lab.server, lab.relay.dir_port, lctx, target="t", timeout=WAIT)
    _assert(result, ANSWERED)
    assert result.details.info["consensus"] is False  # a lone private relay has no consensus to serve


async def test_tor_or_address_drop_is_blocked(lab: Lab, censor: Path3, lctx: Context) -> None:
    assert lab.relay is not None
    censor.censor("-d", lab.server, "-p", "tcp", "--dport", str(lab.relay.or_port), "-j", "DROP")
    _assert(await tor.check_tor_or(lab.server, lab.relay.or_port, lctx, target="t", timeout=WAIT),
            BLOCKED, failures.GENERIC_TIMEOUT)


async def test_tor_dir_request_signature_reset_is_blocked(lab: Lab, censor: Path3, lctx: Context) -> None:
    assert lab.relay is not None
    censor.censor("-p", "tcp", "-m", "string", "--algo", "bm", "--string", "GET /tor/",
                  "-j", "REJECT", "--reject-with", "tcp-reset")
    _assert(await tor.check_tor_dir(lab.server, lab.relay.dir_port, lctx, target="t", timeout=WAIT),
            BLOCKED, failures.CONNECTION_RESET)


async def test_obfs4_answers(lab: Lab, censor: Path3, lctx: Context) -> None:
    assert lab.relay is not None
    result = await tor.check_obfs4(lab.server, lab.relay.obfs4_port, lctx, target="b", cert=lab.relay.cert,
                                   timeout=3.0)
    _assert(result, ANSWERED)
    assert result.details.info["obfs4_handshake"] is True and lab.relay.cert not in repr(result)


async def test_obfs4_port_drop_is_blocked(lab: Lab, censor: Path3, lctx: Context) -> None:
    assert lab.relay is not None
    censor.censor("-p", "tcp", "--dport", str(lab.relay.obfs4_port), "-j", "DROP")
    result = await tor.check_obfs4(lab.server, lab.relay.obfs4_port, lctx, target="b", cert=lab.relay.cert,
                                   timeout=WAIT)
    _assert(result, BLOCKED, failures.GENERIC_TIMEOUT)
    assert result.failed_operation == "connect"


async def test_obfs4_wrong_cert_is_silent(lab: Lab, censor: Path3, lctx: Context) -> None:
    assert lab.relay is not None
    wrong = "A" * 70
    _assert(await tor.check_obfs4(lab.server, lab.relay.obfs4_port, lctx, target="b", cert=wrong, timeout=WAIT),
            SILENT)


# -- Through the dispatcher, as the pipeline runs it (options, secrets file) -----------------------


async def test_dispatch_reads_secrets_file_and_never_records_them(lab: Lab, censor: Path3, lctx: Context,
                                                                  tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(f"client_private_key: {lab.wg_client_private}\n")
    secrets.chmod(0o600)
    target = Target(name="my-wg", service="vpn", category="circumvention", addresses=(lab.server,),
                    ports=(WG_PORT,), checks=("circumvention",),
                    options={"protocol": "wireguard", "server_public_key": lab.wg_server_public,
                             "secrets_file": str(secrets), "timeout": WAIT})
    results = await dispatch.measure(target, lctx)
    assert [r.details.status for r in results] == [ANSWERED]
    assert lab.wg_client_private not in repr(results)
    verdict = family_verdict.decide(results)
    assert verdict is not None and verdict.rule == "circumvention_answered"


# -- A censor that resets after the first protocol packet, through `probe run --once` (issue 14, class 5) --
#
# The product runs on uvloop (probe.service.runner.run_loop), where a reset met while writing reads
# differently than on asyncio's loop (ConnectionResetError('Connection lost'), no errno): these run the
# whole command, on the product's loop, with real servers, and assert the verdict and its reason.

#: protocol -> (port or relay port name, target options, the censor's first-packet rule)
FIRST_PACKET_RESETS: dict[str, tuple[int | str, dict[str, Any], tuple[str, ...]]] = {
    "openvpn_tcp": (OVPN_TCP_AUTH, {"protocol": "openvpn", "transport": "tcp", "tls_auth": "KEY"},
                    ("-p", "tcp", "-m", "u32", "--u32", "0>>22&0x3C@12>>26&0x3C@0>>8&0xFF=0x38")),
    "socks5": (SOCKS, {"protocol": "socks5"},
               ("-p", "tcp", "-m", "string", "--algo", "bm", "--hex-string", "|050100|")),
    "http_connect": (HTTP, {"protocol": "http_connect"},
                     ("-p", "tcp", "-m", "string", "--algo", "bm", "--string", "CONNECT ")),
    "tor_dir": ("dir_port", {"protocol": "tor_dir"},
                ("-p", "tcp", "-m", "string", "--algo", "bm", "--string", "GET /tor/")),
}


@pytest.mark.parametrize("case", list(FIRST_PACKET_RESETS))
def test_first_packet_reset_through_probe_run_is_blocked(lab: Lab, censor: Path3, tmp_path: Path, case: str) -> None:
    import json
    import subprocess
    import sys

    import yaml

    port, options, rule = FIRST_PACKET_RESETS[case]
    if isinstance(port, str):
        assert lab.relay is not None
        port = int(getattr(lab.relay, port))
    options = {k: (lab.ovpn_key if v == "KEY" else v) for k, v in options.items()}
    targets = tmp_path / "targets.yaml"
    targets.write_text(yaml.safe_dump({
        "settings": {"timeouts": {"dns": 2, "connect": 2, "tls": 2, "http": 3}},
        "targets": [{"name": case, "service": "vpn", "category": "circumvention", "addresses": [lab.server],
                     "ports": [port], "checks": ["circumvention"], "options": options}]}))
    censor.censor(*rule, "-j", "REJECT", "--reject-with", "tcp-reset")
    out = tmp_path / "out.jsonl"
    done = subprocess.run([sys.executable, "-m", "probe", "run", "--once", "--targets", str(targets), "--records",
                           str(out), "--no-store", "--json"], capture_output=True, text=True, timeout=120,
                          check=False, cwd=REPO)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    check = next(r for r in records if r["record_type"] != "verdict")
    verdict = next(r for r in records if r["record_type"] == "verdict")
    assert (check["test_keys"]["status"], check["failure"], check["failed_operation"]) == \
        (BLOCKED, failures.CONNECTION_RESET, "read"), check["test_keys"]["evidence"]
    assert verdict["test_keys"]["blocking"] == "circumvention", verdict["test_keys"]
