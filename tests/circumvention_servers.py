"""Real circumvention servers for the tests, and a tiny censor path (no test functions here).

Every server runs as a child process killed in ``finally``; those that could try to
reach the internet (tor, wireguard-go's interface) run in a network namespace that
has no route out. Addresses: 127.0.0.1, or 198.18.0.0/15 inside namespaces made here.

``python -m tests.circumvention_servers mtproxy CONFIG ADDR PORT DC_PORT`` runs
mtprotoproxy (from PyPI) with its Telegram data centres replaced by a local stub
that answers req_pq_multi with resPQ, and with its "what is my IP" lookups cut off.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

REPO = Path(__file__).resolve().parents[1]
PYTHON = Path(sys.executable)  # the interpreter running the tests, with its packages
MTPROXY_SCRIPT = PYTHON.parent / "mtprotoproxy.py"


def have(*binaries: str) -> bool:
    return all(shutil.which(b) for b in binaries)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def tcp_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.3):
        return True
    return False


def in_ns(ns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else argv


@contextlib.contextmanager
def spawn(argv: list[str], log: Path, *, ns: str | None = None, ready: Callable[[], bool] | None = None,
          wait: float = 15.0, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (own session), killed with its group on exit; fails if never ready."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(in_ns(ns, argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=cwd, env=env)
    try:
        if ready is not None and not wait_for(lambda: proc.poll() is None and ready(), wait):
            raise RuntimeError(f"{argv[0]} not ready: {log.read_text(errors='replace')[-1500:]}")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(3)


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=20)


# -- Network namespaces: host ── censor ── server ------------------------------------------


@dataclass(frozen=True)
class Path3:
    """host (this process) ── censor (a router with iptables) ── server namespace.

    ``server`` is the server's address, reachable from the test process through the
    censor; the server namespace has no other route, so nothing leaves the lab.
    """

    prefix: str
    censor_ns: str
    server_ns: str
    host_addr: str
    server: str

    def censor(self, *rule: str) -> None:
        sh("ip", "netns", "exec", self.censor_ns, "iptables", "-I", "FORWARD", *rule)

    def clear(self) -> None:
        sh("ip", "netns", "exec", self.censor_ns, "iptables", "-F", "FORWARD")


@contextlib.contextmanager
def censored_path(prefix: str, subnet: int) -> Iterator[Path3]:
    """Build the three hops with 198.18.<subnet>.0/29 addresses; always torn down."""
    censor, server = f"{prefix}c", f"{prefix}s"
    h, c0, c1, s0 = f"{prefix}h", f"{prefix}c0", f"{prefix}c1", f"{prefix}s0"
    net = f"198.18.{subnet}"
    try:
        sh("ip", "netns", "add", censor)
        sh("ip", "netns", "add", server)
        sh("ip", "link", "add", h, "type", "veth", "peer", "name", c0, "netns", censor)
        sh("ip", "-n", censor, "link", "add", c1, "type", "veth", "peer", "name", s0, "netns", server)
        sh("ip", "addr", "add", f"{net}.1/30", "dev", h)
        sh("ip", "link", "set", h, "up")
        sh("ip", "route", "add", f"{net}.4/30", "via", f"{net}.2")
        for ns, dev, addr in ((censor, c0, f"{net}.2/30"), (censor, c1, f"{net}.5/30"), (server, s0, f"{net}.6/30")):
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", server, "route", "add", f"{net}.0/30", "via", f"{net}.5")
        sh("ip", "netns", "exec", censor, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield Path3(prefix, censor, server, f"{net}.1", f"{net}.6")
    finally:
        for ns in (server, censor):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        sh("ip", "route", "del", f"{net}.4/30", check=False)
        sh("ip", "link", "del", h, check=False)
        sh("ip", "netns", "del", server, check=False)
        sh("ip", "netns", "del", censor, check=False)


# -- OpenVPN -------------------------------------------------------------------------------


def openvpn_server_config(workdir: Path, *, address: str, port: int, proto: str, dev: str,
                          tls_auth: Path | None, tls_crypt: Path | None = None) -> Path:
    """A minimal TLS server (no data channel needed: the probe stops after the hard reset)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("server.test")
    ca.cert_pem.write_to_path(str(workdir / "ca.crt"))
    cert.cert_chain_pems[0].write_to_path(str(workdir / "server.crt"))
    cert.private_key_pem.write_to_path(str(workdir / "server.key"))
    lines = [
        "mode server", "tls-server", f"dev {dev}", "dev-type tun", "topology subnet",
        "ifconfig 198.18.99.1 255.255.255.0", "ifconfig-noexec", "route-noexec",
        f"proto {proto}", f"local {address}", f"port {port}",
        f"ca {workdir / 'ca.crt'}", f"cert {workdir / 'server.crt'}", f"key {workdir / 'server.key'}",
        "dh none", "verb 3",
    ]
    if tls_auth is not None:
        lines.append(f"tls-auth {tls_auth} 0")
    if tls_crypt is not None:
        lines.append(f"tls-crypt {tls_crypt}")
    path = workdir / f"{dev}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def openvpn_key(workdir: Path) -> Path:
    path = workdir / "ta.key"
    sh("openvpn", "--genkey", "secret", str(path))
    return path


# -- WireGuard -----------------------------------------------------------------------------


def wg_keypair() -> tuple[str, str]:
    key = X25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


@contextlib.contextmanager
def wireguard_server(ns: str, dev: str, port: int, server_private: str, peer_public: str,
                     workdir: Path) -> Iterator[None]:
    """wireguard-go (userspace) inside ``ns``, configured with one peer."""
    keyfile = workdir / f"{dev}.key"
    keyfile.write_text(server_private + "\n")
    keyfile.chmod(0o600)
    env = {**os.environ, "WG_PROCESS_FOREGROUND": "1"}
    sock = Path(f"/var/run/wireguard/{dev}.sock")
    with spawn(["wireguard-go", dev], workdir / f"{dev}.log", ns=ns, env=env, ready=sock.exists):
        sh("ip", "netns", "exec", ns, "wg", "set", dev, "private-key", str(keyfile), "listen-port", str(port),
           "peer", peer_public, "allowed-ips", "198.18.98.2/32")
        sh("ip", "-n", ns, "link", "set", dev, "up")
        yield


# -- Tor -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorRelay:
    address: str
    or_port: int
    dir_port: int
    obfs4_port: int
    cert: str


@contextlib.contextmanager
def tor_relay(ns: str, address: str, workdir: Path) -> Iterator[TorRelay]:
    """A private relay (never published, no network beyond the namespace) with an obfs4 transport."""
    data = workdir / "tor-data"
    data.mkdir(mode=0o700)
    or_port, dir_port, obfs4_port = 9001, 9030, 9443
    torrc = workdir / "torrc"
    torrc.write_text("\n".join([
        f"DataDirectory {data}", "SocksPort 0", f"ORPort {address}:{or_port}", f"DirPort {address}:{dir_port}",
        f"Address {address}", "AssumeReachable 1", "PublishServerDescriptor 0", "ExtORPort auto",
        "ServerTransportPlugin obfs4 exec /usr/bin/obfs4proxy",
        f"ServerTransportListenAddr obfs4 {address}:{obfs4_port}", "ServerTransportOptions obfs4 iat-mode=0",
        "Nickname probetest", "ContactInfo none", "Log notice stdout",
    ]) + "\n")
    bridgeline = data / "pt_state" / "obfs4_bridgeline.txt"
    log = workdir / "tor.log"

    def ready() -> bool:
        return bridgeline.exists() and "Registered server transport 'obfs4'" in log.read_text(errors="replace")

    with spawn(["tor", "-f", str(torrc)], log, ns=ns, ready=ready, wait=40):
        line = bridgeline.read_text().strip().splitlines()[-1]
        cert = line.split("cert=", 1)[1].split()[0]
        yield TorRelay(address, or_port, dir_port, obfs4_port, cert)


# -- SOCKS5, HTTP CONNECT, a silent listener -----------------------------------------------


def tinyproxy_config(workdir: Path, address: str, port: int, *, auth: bool) -> Path:
    lines = [f"Port {port}", f"Listen {address}", "Timeout 10", "MaxClients 10", "LogLevel Info",
             "ConnectPort 443", f"ConnectPort {port}", "DisableViaHeader Yes", "Allow 127.0.0.1", "Allow 198.18.0.0/15"]
    if auth:
        lines.append("BasicAuth probe secret")
    path = workdir / f"tinyproxy-{port}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def tinyproxy_argv(config: Path) -> list[str]:
    return ["tinyproxy", "-d", "-c", str(config)]


def microsocks_argv(address: str, port: int, *, auth: bool = False) -> list[str]:
    argv = ["microsocks", "-i", address, "-p", str(port)]
    return [*argv, "-u", "probe", "-P", "secret"] if auth else argv


SILENT_SERVER = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16); held = []\n"
    "deadline = time.time() + 120\n"
    "while time.time() < deadline:\n"
    "    s.settimeout(1)\n"
    "    try: held.append(s.accept()[0])\n"
    "    except OSError: pass\n"
)


def silent_argv(address: str, port: int) -> list[str]:
    """Accepts TCP connections and never says a word (bounded: exits after 120 s)."""
    return [str(PYTHON), "-c", SILENT_SERVER, address, str(port)]


# -- MTProto: mtprotoproxy with a stub data centre -----------------------------------------


def mtproxy_config(workdir: Path, address: str, port: int, secret_hex: str, *, domain: str = "proxy.test") -> Path:
    path = workdir / f"mtproxy-{port}.py"
    path.write_text("\n".join([
        f"PORT = {port}", f"USERS = {{'tg': '{secret_hex}'}}", "MASK = False", f"TLS_DOMAIN = '{domain}'",
        f"LISTEN_ADDR_IPV4 = '{address}'", "LISTEN_ADDR_IPV6 = ''", "PREFER_IPV6 = False",
        "USE_MIDDLE_PROXY = False", "CLIENT_HANDSHAKE_TIMEOUT = 30", "STATS_PRINT_PERIOD = 3600",
        "GET_CERT_LEN_PERIOD = 36000",
    ]) + "\n")
    return path


def mtproxy_argv(config: Path, address: str, port: int) -> list[str]:
    return [str(PYTHON), "-m", "tests.circumvention_servers", "mtproxy", str(config), address, str(port),
            str(port + 1)]


async def _fake_dc(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A Telegram data centre that knows one thing: answer req_pq_multi with resPQ (obfuscated2, no secret)."""
    try:
        header = await asyncio.wait_for(reader.readexactly(64), 10)
        rev = header[8:56][::-1]
        dec = Cipher(algorithms.AES(header[8:40]), modes.CTR(header[40:56])).encryptor()
        enc = Cipher(algorithms.AES(rev[:32]), modes.CTR(rev[32:48])).encryptor()
        dec.update(header)
        for _ in range(8):
            (length,) = struct.unpack("<I", dec.update(await asyncio.wait_for(reader.readexactly(4), 10)))
            message = dec.update(await asyncio.wait_for(reader.readexactly(length & 0x7FFFFFFF), 10))
            if message[20:24] != struct.pack("<I", 0xBE7E8EF1):
                return
            nonce = message[24:40]
            body = struct.pack("<I", 0x05162463) + nonce + os.urandom(16) + b"\x08" + os.urandom(8) + b"\x00" * 3
            body += struct.pack("<IIq", 0x1CB5C415, 1, 0x0BC35F3509F7B7A5)
            reply = b"\x00" * 8 + struct.pack("<qI", int(time.time() * 2**32) | 1, len(body)) + body
            writer.write(enc.update(struct.pack("<I", len(reply)) + reply))
            await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


def _run_mtproxy(config: str, address: str, port: int, dc_port: int) -> None:
    import importlib.util

    sys.argv = ["mtprotoproxy", config]
    spec = importlib.util.spec_from_file_location("mtprotoproxy_under_test", MTPROXY_SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.init_config()
    setattr(mod, "my_ip_info", {"ipv4": address, "ipv6": None})  # noqa: B010 - no "what is my IP" lookups
    mod.TG_DATACENTERS_V4[:] = [address] * len(mod.TG_DATACENTERS_V4)
    setattr(mod, "TG_DATACENTER_PORT", dc_port)  # noqa: B010
    mod.init_stats()

    async def main() -> None:
        await asyncio.start_server(_fake_dc, address, dc_port)
        await asyncio.start_server(mod.handle_client_wrapper, address, port)
        print("ready", flush=True)
        await asyncio.sleep(300)  # bounded life

    asyncio.run(main())


def secret_of(key_hex: str, mode: str, domain: str = "proxy.test") -> str:
    """The secret as it appears in a link: plain hex, dd + hex, or ee + hex + domain in hex."""
    if mode == "plain":
        return key_hex
    if mode == "secure":
        return "dd" + key_hex
    return "ee" + key_hex + domain.encode().hex()


def link(server: str, port: int, secret: str) -> str:
    return f"tg://proxy?server={server}&port={port}&secret={secret}"


def key_hex(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


if __name__ == "__main__" and sys.argv[1:2] == ["mtproxy"]:
    _run_mtproxy(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
