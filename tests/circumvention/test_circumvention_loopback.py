"""Circumvention checks against real servers on 127.0.0.1: microsocks, tinyproxy, mtprotoproxy
(PyPI, masking off, a stub data centre), and OpenVPN 2.6 (root: it needs a tun device).

WireGuard and Tor need a network namespace (an interface; a relay that would try to
reach the directory authorities): they are in tests/lab/test_circumvention_lab.py.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.circumvention import ANSWERED, BLOCKED, INCONCLUSIVE, SILENT
from probe.circumvention.mtproto import check_mtproto
from probe.circumvention.openvpn import TLSAuth, TLSCrypt, check_openvpn
from probe.circumvention.proxies import check_http_connect, check_socks5
from probe.core import failures
from probe.core.context import Context
from tests.circumvention_servers import (
    MTPROXY_SCRIPT,
    REPO,
    free_port,
    have,
    key_hex,
    link,
    microsocks_argv,
    mtproxy_argv,
    mtproxy_config,
    openvpn_key,
    openvpn_server_config,
    silent_argv,
    spawn,
    tcp_open,
    tinyproxy_argv,
    tinyproxy_config,
)

LOCAL = "127.0.0.1"
WAIT = 1.5  # seconds a check waits for an answer: silence cases cost this much


def _served(argv: list[str], log: Path, port: int) -> Iterator[int]:
    with spawn(argv, log, cwd=REPO, ready=lambda: tcp_open(LOCAL, port)):
        yield port


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("circumvention")


# -- SOCKS5 and HTTP CONNECT ------------------------------------------------------------------


@pytest.fixture(scope="module")
def microsocks(workdir: Path) -> Iterator[int]:
    if not have("microsocks"):
        pytest.skip("microsocks is not installed (apt-get install microsocks)")
    port = free_port()
    yield from _served(microsocks_argv(LOCAL, port), workdir / "microsocks.log", port)


@pytest.fixture(scope="module")
def microsocks_auth(workdir: Path) -> Iterator[int]:
    if not have("microsocks"):
        pytest.skip("microsocks is not installed (apt-get install microsocks)")
    port = free_port()
    yield from _served(microsocks_argv(LOCAL, port, auth=True), workdir / "microsocks-auth.log", port)


@pytest.fixture(scope="module")
def silent_port(workdir: Path) -> Iterator[int]:
    port = free_port()
    yield from _served(silent_argv(LOCAL, port), workdir / "silent.log", port)


async def test_socks5_answers(ctx: Context, microsocks: int) -> None:
    result = await check_socks5(LOCAL, microsocks, ctx, target="socks", timeout=WAIT)
    assert result.ok and result.details.status == ANSWERED
    assert result.details.protocol == "socks5" and result.details.info["method"] == 0
    assert result.check == "circumvention" and result.failure is None


async def test_socks5_carries_traffic(ctx: Context, microsocks: int, silent_port: int) -> None:
    result = await check_socks5(LOCAL, microsocks, ctx, target="socks", connect_to=f"{LOCAL}:{silent_port}",
                                timeout=WAIT)
    assert result.details.status == ANSWERED
    assert result.details.info["connect_reply"] == 0 and result.details.info["carries_traffic"] is True


async def test_socks5_that_wants_credentials_still_answers(ctx: Context, microsocks_auth: int) -> None:
    result = await check_socks5(LOCAL, microsocks_auth, ctx, target="socks", timeout=WAIT)
    assert result.details.status == ANSWERED and result.details.info["method"] == 0xFF
    good = await check_socks5(LOCAL, microsocks_auth, ctx, target="socks", username="probe", password="secret",
                              timeout=WAIT)
    assert good.details.status == ANSWERED and good.details.info["method"] == 2


async def test_socks5_silent_listener_is_blocked_not_silent(ctx: Context, silent_port: int) -> None:
    """SOCKS5 has no silent mode: a server that accepts and says nothing is a drop after the first packet."""
    result = await check_socks5(LOCAL, silent_port, ctx, target="socks", timeout=WAIT)
    assert result.details.status == BLOCKED
    assert result.failure == failures.GENERIC_TIMEOUT and result.failed_operation == "read"


async def test_closed_port_is_blocked_with_refused(ctx: Context) -> None:
    result = await check_socks5(LOCAL, free_port(), ctx, target="socks", timeout=WAIT)
    assert result.details.status == BLOCKED
    assert result.failure == failures.CONNECTION_REFUSED and result.failed_operation == "connect"


@pytest.fixture(scope="module")
def tinyproxy(workdir: Path) -> Iterator[tuple[int, int]]:
    if not have("tinyproxy"):
        pytest.skip("tinyproxy is not installed (apt-get install tinyproxy)")
    open_port, auth_port = free_port(), free_port()
    with spawn(tinyproxy_argv(tinyproxy_config(workdir, LOCAL, open_port, auth=False)), workdir / "tp1.log",
               ready=lambda: tcp_open(LOCAL, open_port)), \
            spawn(tinyproxy_argv(tinyproxy_config(workdir, LOCAL, auth_port, auth=True)), workdir / "tp2.log",
                  ready=lambda: tcp_open(LOCAL, auth_port)):
        yield open_port, auth_port


async def test_http_connect_answers(ctx: Context, tinyproxy: tuple[int, int]) -> None:
    result = await check_http_connect(LOCAL, tinyproxy[0], ctx, target="http", timeout=WAIT)
    assert result.details.status == ANSWERED and result.details.info["status"] == 200
    through = await check_http_connect(LOCAL, tinyproxy[0], ctx, target="http", connect_to=f"{LOCAL}:443",
                                       timeout=WAIT)
    # Nothing listens on 443: tinyproxy answers for itself, an error page, so it is not shown to be a proxy.
    assert through.details.status in (ANSWERED, INCONCLUSIVE)


async def test_http_connect_407_identifies_a_proxy(ctx: Context, tinyproxy: tuple[int, int]) -> None:
    result = await check_http_connect(LOCAL, tinyproxy[1], ctx, target="http", timeout=WAIT)
    assert result.details.status == ANSWERED and result.details.info["status"] == 407


async def test_http_connect_silent_listener_is_blocked(ctx: Context, silent_port: int) -> None:
    result = await check_http_connect(LOCAL, silent_port, ctx, target="http", timeout=WAIT)
    assert result.details.status == BLOCKED and result.failure == failures.GENERIC_TIMEOUT


# -- MTProto proxy ------------------------------------------------------------------------------

KEY = key_hex("probe-test-proxy")


@pytest.fixture(scope="module")
def mtproxy(workdir: Path) -> Iterator[int]:
    if not MTPROXY_SCRIPT.exists():
        pytest.skip("mtprotoproxy is not installed in this environment (pip install mtprotoproxy)")
    failed: RuntimeError | None = None
    for attempt in range(3):  # a port taken meanwhile, or a slow start under load: another port
        port = free_port()
        while tcp_open(LOCAL, port + 1):  # the stub data centre listens on port + 1
            port = free_port()
        config = mtproxy_config(workdir, LOCAL, port, KEY)
        server = spawn(mtproxy_argv(config, LOCAL, port), workdir / f"mtproxy-{attempt}.log", cwd=REPO,
                       ready=lambda port=port: tcp_open(LOCAL, port), wait=30.0)
        try:
            server.__enter__()
        except RuntimeError as exc:
            failed = exc
            continue
        try:
            yield port
        finally:
            server.__exit__(None, None, None)
        return
    assert failed is not None
    raise failed


@pytest.mark.parametrize("secret", [KEY, "dd" + KEY, "ee" + KEY + b"proxy.test".hex()],
                         ids=["plain", "dd", "ee"])
async def test_mtproto_answers_req_pq_multi(ctx: Context, mtproxy: int, secret: str) -> None:
    result = await check_mtproto(link(LOCAL, mtproxy, secret), ctx, target="mtproto", timeout=WAIT)
    assert result.details.status == ANSWERED, result.details.evidence
    assert result.details.info["rpc_ok"] is True
    assert result.details.info.get("server_hmac", True) is True
    assert KEY not in repr(result) and result.details.secret_sha256 is not None


@pytest.mark.parametrize("prefix", ["", "dd", "ee"])
async def test_mtproto_wrong_secret_is_silent(ctx: Context, mtproxy: int, prefix: str) -> None:
    wrong = prefix + key_hex("another proxy") + (b"proxy.test".hex() if prefix == "ee" else "")
    result = await check_mtproto(link(LOCAL, mtproxy, wrong), ctx, target="mtproto", timeout=WAIT)
    assert result.details.status == SILENT and result.failure is None


# -- OpenVPN (root: a tun device) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def openvpn(workdir: Path) -> Iterator[dict[str, Any]]:
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        pytest.skip("OpenVPN needs root and /dev/net/tun")
    if not have("openvpn"):
        pytest.skip("openvpn is not installed (apt-get install openvpn)")
    key = openvpn_key(workdir)
    udp, udp_auth, tcp_auth = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM), free_port()
    udp_crypt = free_port(socket.SOCK_DGRAM)
    tag = str(os.getpid() % 10000)
    configs = [
        openvpn_server_config(workdir, address=LOCAL, port=udp, proto="udp4", dev=f"pvu{tag}", tls_auth=None),
        openvpn_server_config(workdir, address=LOCAL, port=udp_auth, proto="udp4", dev=f"pva{tag}", tls_auth=key),
        openvpn_server_config(workdir, address=LOCAL, port=tcp_auth, proto="tcp4-server", dev=f"pvt{tag}",
                              tls_auth=key),
        openvpn_server_config(workdir, address=LOCAL, port=udp_crypt, proto="udp4", dev=f"pvc{tag}", tls_auth=None,
                              tls_crypt=key),
    ]
    logs = [workdir / f"openvpn{i}.log" for i in range(4)]

    def started(log: Path) -> bool:
        return "Initialization Sequence Completed" in log.read_text(errors="replace")

    with spawn(["openvpn", "--config", str(configs[0])], logs[0], ready=lambda: started(logs[0])), \
            spawn(["openvpn", "--config", str(configs[1])], logs[1], ready=lambda: started(logs[1])), \
            spawn(["openvpn", "--config", str(configs[2])], logs[2], ready=lambda: started(logs[2])), \
            spawn(["openvpn", "--config", str(configs[3])], logs[3], ready=lambda: started(logs[3])):
        yield {"udp": udp, "udp_auth": udp_auth, "tcp_auth": tcp_auth, "udp_crypt": udp_crypt, "key": key.read_text()}


@pytest.mark.lab
async def test_openvpn_udp_answers(ctx: Context, openvpn: dict[str, Any]) -> None:
    result = await check_openvpn(LOCAL, int(openvpn["udp"]), ctx, target="ovpn", timeout=WAIT)
    assert result.details.status == ANSWERED and result.details.info["opcode"] == 8


@pytest.mark.lab
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_openvpn_tls_auth_with_key_answers(ctx: Context, openvpn: dict[str, Any], transport: str) -> None:
    key = TLSAuth.from_text(openvpn["key"])
    port = int(openvpn["udp_auth" if transport == "udp" else "tcp_auth"])
    result = await check_openvpn(LOCAL, port, ctx, target="ovpn", transport=transport,  # type: ignore[arg-type]
                                 tls_auth=key, timeout=WAIT)
    assert result.details.status == ANSWERED, result.details.evidence
    assert result.details.info["hmac_verified"] is True
    assert result.details.secret_sha256 and key.key.hex() not in repr(result)


@pytest.mark.lab
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_openvpn_tls_auth_without_key_is_silent(ctx: Context, openvpn: dict[str, Any],
                                                      transport: str) -> None:
    port = int(openvpn["udp_auth" if transport == "udp" else "tcp_auth"])
    result = await check_openvpn(LOCAL, port, ctx, target="ovpn", transport=transport,  # type: ignore[arg-type]
                                 timeout=WAIT)
    assert result.details.status == SILENT and result.failure is None
    assert "HMAC firewall possible" in result.details.evidence


@pytest.mark.lab
async def test_openvpn_wrong_key_with_key_given_is_not_answered(ctx: Context, openvpn: dict[str, Any]) -> None:
    """A key that is not the server's: the server drops us; with a key given, that silence counts as blocked."""
    wrong = TLSAuth(os.urandom(256))
    result = await check_openvpn(LOCAL, int(openvpn["udp_auth"]), ctx, target="ovpn", tls_auth=wrong, timeout=WAIT)
    assert result.details.status == BLOCKED and result.failure == failures.GENERIC_TIMEOUT


@pytest.mark.lab
async def test_openvpn_tls_crypt(ctx: Context, openvpn: dict[str, Any]) -> None:
    port = int(openvpn["udp_crypt"])
    key = TLSCrypt.from_text(openvpn["key"])
    result = await check_openvpn(LOCAL, port, ctx, target="ovpn", tls_crypt=key, timeout=WAIT)
    assert result.details.status == ANSWERED and result.details.info["hmac_verified"] is True
    without = await check_openvpn(LOCAL, port, ctx, target="ovpn", timeout=WAIT)
    assert without.details.status == SILENT
