"""Build, drive and tear down the lab: namespaces, veths, routes, servers, censor rules.

Everything the lab creates carries its prefix (namespaces ``PREFIX-client``,
``PREFIX-r1``..., ``PREFIX-srv``) and its processes are recorded in its state
directory, so :func:`down` removes everything even after a crash, and tests can
run labs side by side under different prefixes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from probe.lab import pki, topology
from probe.lab.base import TECHNIQUES, Handle, LabError, run
from probe.lab.topology import (
    CLIENT_ADDR,
    CLIENT_GW,
    DOH,
    HELPER,
    HOSTS,
    SRV_ADDR,
    SRV_GW,
    SUBNETS,
    transit,
    transit_net,
)

STATE_ROOT = Path(os.environ.get("PROBE_LAB_STATE", "/run/probe-lab"))
DEFAULT_RATE = "10gbit"


def namespaces(prefix: str) -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(prefix + "-")]


def _ours(pid: int, state: Path) -> bool:
    """Whether a recorded pid is still one of the lab's processes (pids are reused after a crash)."""
    try:
        return str(state) in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False


def down(prefix: str) -> None:
    """Remove every namespace, process, stray veth and file of the lab ``prefix``; safe to call twice.

    Processes are found twice over: the pids recorded in the state directory (checked against their
    command line, which names the state directory) and whatever still runs in the namespaces.
    """
    state = STATE_ROOT / prefix
    pids: list[int] = []
    if (state / "pids").exists():
        pids += [int(p) for p in (state / "pids").read_text().split() if _ours(int(p), state)]
    for ns in namespaces(prefix):
        pids += [int(p) for p in run(["ip", "netns", "pids", ns], check=False).stdout.split()]
    for pid in set(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for ns in namespaces(prefix):
        run(["ip", "netns", "del", ns], check=False)
    for link in run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():  # a crash inside _link
        name = link.split(":")[1].strip().split("@")[0] if link.count(":") >= 2 else ""
        if name.startswith(f"{prefix}x"):
            run(["ip", "link", "del", name], check=False)
    if state.exists():
        for path in sorted(state.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        state.rmdir()


class _Down:
    """``Lab.down(prefix)`` tears down any lab by prefix (after a crash too); ``lab.down()`` this one."""

    def __get__(self, obj: Lab | None, owner: type[Lab]) -> Callable[..., None]:
        if obj is None:
            return down
        return lambda: down(obj.prefix)


class Lab:
    """A running lab. Use as a context manager: ``with Lab("plab") as lab: ...``."""

    down = _Down()

    def __init__(self, prefix: str = "plab", hops: int = 1, censor_hop: int = 1) -> None:
        if not 1 <= censor_hop <= hops or hops > 8:
            raise LabError(f"censor_hop {censor_hop} must be within 1..hops ({hops}), hops at most 8")
        if len(prefix) > 8 or not prefix.replace("-", "").isalnum():
            raise LabError(f"prefix {prefix!r}: at most 8 letters/digits")
        self.prefix, self.hops, self.censor_hop = prefix, hops, censor_hop
        self.state = STATE_ROOT / prefix
        self.handles: list[Handle] = []
        self._mark = 0x10

    # -- names -------------------------------------------------------------------------

    @property
    def ns_client(self) -> str:
        return f"{self.prefix}-client"

    @property
    def ns_srv(self) -> str:
        return f"{self.prefix}-srv"

    def ns_router(self, hop: int) -> str:
        return f"{self.prefix}-r{hop}"

    @property
    def ns_censor(self) -> str:
        """The namespace of the censoring router (hop ``censor_hop``); techniques are applied there."""
        return self.ns_router(self.censor_hop)

    def ns_server(self, name: str | None = None) -> str:
        """The namespace serving host ``name``: all server hosts share one namespace (``ns_srv``)."""
        if name is not None:
            topology.host(name)  # unknown names fail loudly
        return self.ns_srv

    def router_address(self, hop: int) -> str:
        """Router ``hop``'s client-facing address: what a traceroute from the client shows at that hop."""
        if not 1 <= hop <= self.hops:
            raise LabError(f"hop {hop}: this lab has routers 1..{self.hops}")
        return topology.router_address(hop)

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self.up()
        except BaseException:
            down(self.prefix)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        down(self.prefix)

    def exec(
        self, ns: str, argv: list[str], *, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout)

    def spawn(self, ns: str, argv: list[str], log: str) -> int:
        with open(self.state / log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        with open(self.state / "pids", "a") as pids:
            pids.write(f"{proc.pid}\n")
        return proc.pid

    def up(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, iptables, tc)")
        down(self.prefix)  # leftovers of a crashed run
        self.state.mkdir(parents=True)
        (self.state / "rules.json").write_text("{}")
        (self.state / "behaviour.json").write_text('{"slow": {}, "expired": []}')
        pki.make(self.state)
        (self.state / "meta.json").write_text(json.dumps({"hops": self.hops, "censor_hop": self.censor_hop}))
        routers = [self.ns_router(i) for i in range(1, self.hops + 1)]
        for ns in [self.ns_client, *routers, self.ns_srv]:
            run(["ip", "netns", "add", ns])
            self.exec(ns, ["ip", "link", "set", "lo", "up"])
        for ns in routers:
            self.exec(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # client ── r1
        self._link(self.ns_client, "eth0", CLIENT_ADDR, routers[0], "left", CLIENT_GW, 30)
        self.exec(self.ns_client, ["ip", "route", "add", "default", "via", CLIENT_GW])
        # r_i ── r_i+1
        for i in range(1, self.hops):
            a, b = transit(i)
            self._link(routers[i - 1], "right", a, routers[i], "left", b, 30)
        # r_N ── srv
        self._link(routers[-1], "right", SRV_GW, self.ns_srv, "eth0", SRV_ADDR, 30)
        self.exec(self.ns_srv, ["ip", "route", "add", "default", "via", SRV_GW])
        for h in HOSTS.values():
            self.exec(self.ns_srv, ["ip", "addr", "add", f"{h.address}/32", "dev", "eth0"])
        for i, ns in enumerate(routers, start=1):
            if i > 1:  # towards the client
                self.exec(ns, ["ip", "route", "add", "198.18.0.0/24", "via", transit(i - 1)[0]])
            for subnet in (*SUBNETS, "198.18.2.0/24"):
                if i < self.hops:
                    self.exec(ns, ["ip", "route", "replace", subnet, "via", transit(i)[1]])
                else:
                    self.exec(ns, ["ip", "route", "replace", subnet, "via", SRV_ADDR])
            for later in range(i + 1, self.hops):  # transit links further on
                self.exec(ns, ["ip", "route", "add", transit_net(later), "via", transit(i)[1]])
            for earlier in range(1, i - 1):
                self.exec(ns, ["ip", "route", "add", transit_net(earlier), "via", transit(i - 1)[0]])
        for iface in ("left", "right"):  # htb roots for throttling and shaping
            self._htb_root(iface)
        self.spawn(self.ns_srv, [sys.executable, "-m", "probe.lab.servers", str(self.state)], "servers.log")
        self.spawn(routers[0], [sys.executable, "-m", "probe.lab.censor", "resolver", str(self.state)], "resolver.log")
        self.spawn(self.ns_censor, [sys.executable, "-m", "probe.lab.censor", "blockpages", str(self.state)],
                   "blockpages.log")
        self.wait_until(lambda: (self.state / "servers.ready").exists(), "servers", 30)
        self.wait_until(lambda: self._answers(CLIENT_GW, 53) and self._answers("127.0.0.1", 8080, ns=self.ns_censor),
                   "resolver/blockpages", 30)

    def _link(self, ns_a: str, name_a: str, addr_a: str, ns_b: str, name_b: str, addr_b: str, bits: int) -> None:
        tmp_a, tmp_b = f"{self.prefix}x{os.getpid() % 1000}a", f"{self.prefix}x{os.getpid() % 1000}b"
        run(["ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b])
        run(["ip", "link", "set", tmp_a, "netns", ns_a])
        run(["ip", "link", "set", tmp_b, "netns", ns_b])
        for ns, tmp, name, addr in ((ns_a, tmp_a, name_a, addr_a), (ns_b, tmp_b, name_b, addr_b)):
            self.exec(ns, ["ip", "link", "set", tmp, "name", name])
            self.exec(ns, ["ip", "addr", "add", f"{addr}/{bits}", "dev", name])
            self.exec(ns, ["ip", "link", "set", name, "up"])
            self.exec(ns, ["ethtool", "-K", name, "tso", "off", "gso", "off", "gro", "off"], check=False)

    def _htb_root(self, iface: str) -> None:
        ns = self.ns_censor
        self.exec(ns, ["tc", "qdisc", "add", "dev", iface, "root", "handle", "1:", "htb", "default", "1"])
        self.exec(ns, ["tc", "class", "add", "dev", iface, "parent", "1:", "classid", "1:1", "htb", "rate",
                       DEFAULT_RATE, "burst", "4mb", "cburst", "4mb", "quantum", "60000"])

    def _answers(self, address: str, port: int, ns: str | None = None) -> bool:
        script = ("import socket,sys; s=socket.socket(); s.settimeout(1); "
                  f"sys.exit(s.connect_ex(({address!r}, {port})))")
        return self.exec(ns or self.ns_client, [sys.executable, "-c", script], check=False).returncode == 0

    @staticmethod
    def wait_until(ready: Any, what: str, seconds: float) -> None:
        """Poll ``ready()`` until true; a LabError naming ``what`` after ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.1)
        raise LabError(f"{what} did not start within {seconds:.0f} s (see the logs in the lab's state directory)")

    def status(self) -> dict[str, Any]:
        alive = []
        if (self.state / "pids").exists():
            for pid in (self.state / "pids").read_text().split():
                alive.append((int(pid), Path(f"/proc/{pid}").exists()))
        return {"prefix": self.prefix, "namespaces": namespaces(self.prefix), "processes": alive,
                "techniques": [(h.technique, h.params) for h in self.handles]}

    # -- techniques ----------------------------------------------------------------------

    def apply(self, technique: str, **params: Any) -> Handle:
        if technique not in TECHNIQUES:
            raise LabError(f"unknown technique {technique!r} (known: {', '.join(sorted(TECHNIQUES))})")
        handle = Handle(technique, params)
        TECHNIQUES[technique](self, handle, **params)
        self.handles.append(handle)
        return handle

    def remove(self, handle: Handle) -> None:
        for argv in reversed(handle.undo):
            run(argv, check=False)
        for pid in handle.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if handle.rules:
            self._edit_json("rules.json", handle.rules, add=False)
        if handle.behaviour:
            self._edit_json("behaviour.json", handle.behaviour, add=False)
        self.handles.remove(handle)

    def clear(self) -> None:
        for handle in list(reversed(self.handles)):
            self.remove(handle)

    def _edit_json(self, name: str, entries: dict[str, Any], add: bool) -> None:
        """Merge (or take back) entries of a rules file; lists and mappings are merged by key."""
        path = self.state / name
        data = json.loads(path.read_text())
        for key, value in entries.items():
            if isinstance(value, dict):
                current = data.setdefault(key, {})
                for k, v in value.items():
                    if add:
                        current[k] = v
                    else:
                        current.pop(k, None)
            else:
                current_list = data.setdefault(key, [])
                for v in value:
                    if add and v not in current_list:
                        current_list.append(v)
                    elif not add and v in current_list:
                        current_list.remove(v)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
        time.sleep(0.02)  # mtime granularity: readers notice the change

    def next_mark(self) -> int:
        self._mark += 1
        return self._mark

    # -- the probe -------------------------------------------------------------------------

    def targets_yaml(self, names: list[str], overrides: dict[str, dict[str, Any]] | None = None,
                     settings: dict[str, Any] | None = None) -> str:
        """A targets file for lab hosts, with the lab's resolvers, CA and test helper."""
        overrides = overrides or {}
        base_settings: dict[str, Any] = {
            "resolvers": [f"udp://{topology.ISP_RESOLVER}"],
            "control_resolver": f"https://{DOH}/dns-query",
            "test_helper": f"https://{HELPER}/",
            "ca_bundle": str(self.state / "ca.pem"),
            "timeouts": {"dns": 2, "connect": 2, "tls": 2, "http": 4, "throughput": 10},
            "probe_id": f"lab-{self.prefix}",
            **(settings or {}),
        }
        targets: list[dict[str, Any]] = [
            {"name": "control", "service": "control", "category": "control", "host": "control.test",
             "checks": ["dns", "tcp", "tls"]},
        ]
        for name in names:
            host = topology.host(name)
            entry: dict[str, Any] = {"name": name, "service": host.service, "category": host.role, "host": name}
            entry.update(overrides.get(name, {}))
            targets.append(entry)
        return yaml.safe_dump({"settings": base_settings, "targets": targets}, sort_keys=False, allow_unicode=True)

    def run_probe(self, targets_yaml: str, only: list[str] | None = None, timeout: float = 180) -> list[dict[str, Any]]:
        """Run ``probe run --once`` in the client namespace; return its JSONL records."""
        stamp = f"{time.monotonic_ns()}"
        targets, out = self.state / f"targets-{stamp}.yaml", self.state / f"out-{stamp}.jsonl"
        targets.write_text(targets_yaml)
        argv = [sys.executable, "-m", "probe", "run", "--once", "--targets", str(targets), "--records", str(out),
                "--no-store", "--json", "--i-consent"]  # the lab measures its own namespaces
        if only:
            argv += ["--only", *only]
        done = self.exec(self.ns_client, argv, check=False, timeout=timeout)
        if done.returncode != 0:
            raise LabError(f"probe run failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]

    @staticmethod
    def verdicts(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """target → verdict record (test_keys flattened in)."""
        return {r["target"]: {**r, **r["test_keys"]} for r in records if r["record_type"] == "verdict"}


