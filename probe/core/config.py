"""Targets and settings: loaded, defaulted and validated once, at load.

Like blackbox_exporter's ``config.UnmarshalYAML``, everything is checked here so
that checks never re-check their inputs. The YAML is composed into nodes first,
so that every error can name the file, line, key and value::

    targets.yaml:12: targets[3].ports[0]: 70000 is not a port (1-65535)

The schema is the two tables ``SETTINGS`` and ``TARGET`` below: one row per
key, with its parser and default. docs/config.md documents each key.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from probe.core.registry import option_problems

DEFAULT_TARGETS = Path(__file__).resolve().parent.parent / "data" / "targets.yaml"  # a link to ../../targets.yaml

CHECK_KINDS = frozenset(
    {"dns", "tcp", "tls", "http", "throughput", "quic", "diagnostics", "circumvention"}
)
FAMILY_CHECKS = frozenset({"diagnostics", "circumvention"})  # their options: probe.core.registry
RESOLVER_SCHEMES = frozenset({"udp", "tcp", "tls", "https"})
ENCRYPTED_SCHEMES = frozenset({"tls", "https"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_HOST = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*"
                   r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.?$")


class ConfigError(ValueError):
    """A configuration problem, with the place it was found."""

    def __init__(self, path: str, line: int | None, where: str, message: str) -> None:
        self.path, self.line, self.where = path, line, where
        place = f"{path}:{line}" if line is not None else path
        super().__init__(f"{place}: {where}: {message}" if where else f"{place}: {message}")


@dataclass(frozen=True)
class ResolverSpec:
    """A resolver to test: ``system`` or ``scheme://host[:port][/path]``."""

    url: str
    scheme: str  # "system", "udp", "tcp", "tls" or "https"
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def encrypted(self) -> bool:
        return self.scheme in ENCRYPTED_SCHEMES

    @property
    def label(self) -> str:
        """Short, bounded name for metrics and tables."""
        return self.url


@dataclass(frozen=True)
class Timeouts:
    dns: float = 5.0
    connect: float = 5.0
    tls: float = 5.0
    http: float = 10.0
    throughput: float = 10.0


@dataclass(frozen=True)
class Upload:
    """``settings.upload``: sending the measurements to a collector (issue 16, docs/fleet.md)."""

    enabled: bool = False
    credential: str | None = None      # probe enrol's file (None: $XDG_CONFIG_HOME/probe/fleet.json)
    urls: tuple[str, ...] = ()         # collector URLs tried in order (empty: the enrolment's)
    proxy: str | None = None           # socks5://HOST:PORT or http://HOST:PORT (None: the enrolment's)
    cacert: str | None = None          # trust this CA for the collector's certificate
    batch_size: int = 500
    interval: float = 60.0             # seconds between upload rounds
    max_pending_days: int = 30         # the queue's bound: older measurements not uploaded are deleted


@dataclass(frozen=True)
class Settings:
    probe_id: str | None = None
    probe_cc: str = "ZZ"
    probe_asn: str = "AS0"
    resolvers: tuple[ResolverSpec, ...] = (ResolverSpec("system", "system"),)
    control_resolver: ResolverSpec | None = None
    test_helper: str | None = None
    ca_bundle: str | None = None
    store: str = "probe.sqlite"
    retention_days: int = 90
    store_buffer_mb: int = 64
    concurrency: int = 32
    timeouts: Timeouts = field(default_factory=Timeouts)
    control_sni: str = "www.example.com"
    http_max_body: int = 1 << 20
    user_agent: str = "probe/0.1 (+https://github.com/; network measurement)"
    interval: float = 300.0
    jitter: float = 0.1
    retests: int = 4
    retest_spacing: float = 15.0
    adaptive_interval: bool = True  # daemon: early regular runs while a change is undecided (retest.Pacer)
    listen: str = "127.0.0.1:9810"
    ipv6: bool = False
    throughput_max_bytes: int = 512 * 1024
    throughput_max_seconds: float = 10.0
    informed_consent: bool = False  # the operator has read the notice (`probe run`/`daemon` skip asking)
    upload: Upload = field(default_factory=Upload)


@dataclass(frozen=True)
class Target:
    name: str
    service: str
    category: str
    host: str | None = None
    addresses: tuple[str, ...] = ()
    ports: tuple[int, ...] = (443,)
    checks: tuple[str, ...] = ("dns", "tcp", "tls", "http")
    sni: str | None = None
    control_sni: str | None = None
    urls: tuple[str, ...] = ()
    alpn: tuple[str, ...] = ("h2", "http/1.1")
    control: bool = False
    control_host: str | None = None
    interval: float | None = None
    throughput_url: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None

    @property
    def server_name(self) -> str | None:
        """The SNI to send: explicit ``sni``, else the host (None for bare addresses)."""
        return self.sni or self.host


@dataclass(frozen=True)
class Config:
    settings: Settings
    targets: tuple[Target, ...]
    path: str

    def select(self, names: list[str] | None) -> Config:
        """Only the named targets (controls stay, they are needed for verdicts)."""
        if not names:
            return self
        known = {t.name for t in self.targets}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(self.path, None, "--only", f"unknown target(s): {', '.join(unknown)}")
        wanted = set(names)
        chosen = tuple(t for t in self.targets if t.name in wanted or t.control)
        return replace(self, targets=chosen)


# -- Node helpers ------------------------------------------------------------------


class _Ctx:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, node: yaml.Node, where: str, message: str) -> ConfigError:
        return ConfigError(self.path, node.start_mark.line + 1, where, message)


def _scalar(node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        return node
    return yaml.constructor.SafeConstructor().construct_object(node)  # a whole SafeLoader costs 40 us


def _show(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return repr(_scalar(node))
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


Parser = Callable[[yaml.Node, str, _Ctx], Any]


def _str(node: yaml.Node, where: str, ctx: _Ctx) -> str:
    value = _scalar(node)
    if not isinstance(value, str) or not value.strip():
        raise ctx.fail(node, where, f"{_show(node)} is not a non-empty string")
    return value


def _opt_str(node: yaml.Node, where: str, ctx: _Ctx) -> str | None:
    return None if _scalar(node) is None else _str(node, where, ctx)


def _name(node: yaml.Node, where: str, ctx: _Ctx) -> str:
    value = _str(node, where, ctx)
    if not _NAME.match(value):
        raise ctx.fail(node, where, f"{value!r} is not a valid name (letters, digits, _ . -)")
    return value


def _hostname(node: yaml.Node, where: str, ctx: _Ctx) -> str:
    value = _str(node, where, ctx)
    if not _HOST.match(value) or is_ip(value):
        raise ctx.fail(node, where, f"{value!r} is not a host name")
    return value.rstrip(".").lower()


def _opt_hostname(node: yaml.Node, where: str, ctx: _Ctx) -> str | None:
    return None if _scalar(node) is None else _hostname(node, where, ctx)


def is_ip(text: str) -> bool:
    """True for an IPv4 or IPv6 address literal."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _bool(node: yaml.Node, where: str, ctx: _Ctx) -> bool:
    value = _scalar(node)
    if not isinstance(value, bool):
        raise ctx.fail(node, where, f"{_show(node)} is not true or false")
    return value


def _number(low: float, high: float, integer: bool = False) -> Parser:
    def parse(node: yaml.Node, where: str, ctx: _Ctx) -> float | int:
        value = _scalar(node)
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            kind = "an integer" if integer else "a number"
            raise ctx.fail(node, where, f"{_show(node)} is not {kind}")
        if not low <= value <= high:
            raise ctx.fail(node, where, f"{value!r} is out of range [{low:g}, {high:g}]")
        return float(value) if not integer else int(value)

    return parse


def _port(node: yaml.Node, where: str, ctx: _Ctx) -> int:
    value = _scalar(node)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ctx.fail(node, where, f"{_show(node)} is not a port (1-65535)")
    return value


def _address(node: yaml.Node, where: str, ctx: _Ctx) -> str:
    value = _str(node, where, ctx)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ctx.fail(node, where, f"{value!r} is not an IP address") from None


def _url(node: yaml.Node, where: str, ctx: _Ctx) -> str:
    value = _str(node, where, ctx)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ctx.fail(node, where, f"{value!r} is not an http:// or https:// URL")
    return value


def _opt_url(node: yaml.Node, where: str, ctx: _Ctx) -> str | None:
    return None if _scalar(node) is None else _url(node, where, ctx)


def _check_kind(node: yaml.Node, where: str, ctx: _Ctx) -> str:
    value = _str(node, where, ctx)
    if value not in CHECK_KINDS:
        raise ctx.fail(node, where, f"unknown check {value!r} (one of: {', '.join(sorted(CHECK_KINDS))})")
    return value


def _listen(node: yaml.Node, where: str, ctx: _Ctx) -> str:
    value = _str(node, where, ctx)
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ctx.fail(node, where, f"{value!r} is not HOST:PORT")
    return value


def parse_resolver(text: str) -> ResolverSpec:
    """Parse ``system`` or a resolver URL; raises ValueError naming the problem."""
    if text == "system":
        return ResolverSpec("system", "system")
    parts = urlsplit(text)
    if parts.scheme not in RESOLVER_SCHEMES:
        raise ValueError(f"{text!r}: resolver scheme must be one of system, udp://, tcp://, tls://, https://")
    if not parts.hostname:
        raise ValueError(f"{text!r}: resolver has no host")
    default_port = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}[parts.scheme]
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError(f"{text!r}: bad port") from None
    path = parts.path or ("/dns-query" if parts.scheme == "https" else "")
    return ResolverSpec(text, parts.scheme, parts.hostname, port, path)


def _resolver(node: yaml.Node, where: str, ctx: _Ctx) -> ResolverSpec:
    try:
        return parse_resolver(_str(node, where, ctx))
    except ValueError as exc:
        raise ctx.fail(node, where, str(exc)) from None


def _control_resolver(node: yaml.Node, where: str, ctx: _Ctx) -> ResolverSpec | None:
    if _scalar(node) is None:
        return None
    spec = _resolver(node, where, ctx)
    if not spec.encrypted:
        raise ctx.fail(node, where, f"{spec.url!r}: the control resolver must be encrypted (tls:// or https://)")
    return spec


def _list(item: Parser, allow_empty: bool = False) -> Parser:
    def parse(node: yaml.Node, where: str, ctx: _Ctx) -> tuple[Any, ...]:
        if isinstance(node, yaml.ScalarNode) and _scalar(node) is not None:
            return (item(node, where, ctx),)  # a single value stands for a list of one
        if not isinstance(node, yaml.SequenceNode):
            raise ctx.fail(node, where, f"{_show(node)} is not a list")
        if not node.value and not allow_empty:
            raise ctx.fail(node, where, "the list is empty")
        return tuple(item(child, f"{where}[{i}]", ctx) for i, child in enumerate(node.value))

    return parse


def _mapping(node: yaml.Node, where: str, ctx: _Ctx) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(node, where, f"{_show(node)} is not a mapping")
    return {str(_scalar(k)): _plain(v) for k, v in node.value}


def _plain(node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return {str(_scalar(k)): _plain(v) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v) for v in node.value]
    return _scalar(node)


def _fields(
    node: yaml.Node, where: str, ctx: _Ctx, schema: Mapping[str, Parser]
) -> tuple[dict[str, Any], dict[str, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(node, where, f"{_show(node)} is not a mapping")
    values: dict[str, Any] = {}
    nodes: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = _scalar(key_node)
        path = f"{where}.{key}" if where else str(key)
        if key not in schema:
            raise ctx.fail(key_node, path, f"unknown key {key!r} (known: {', '.join(sorted(schema))})")
        if key in values:
            raise ctx.fail(key_node, path, "duplicate key")
        values[key] = schema[key](value_node, path, ctx)
        nodes[key] = key_node
    return values, nodes


def _timeouts(node: yaml.Node, where: str, ctx: _Ctx) -> Timeouts:
    positive = _number(0.001, 3600)
    schema = {name: positive for name in Timeouts.__dataclass_fields__}
    values, _ = _fields(node, where, ctx, schema)
    return Timeouts(**values)


def _proxy(node: yaml.Node, where: str, ctx: _Ctx) -> str | None:
    value = _opt_str(node, where, ctx)
    if value is not None and urlsplit(value).scheme not in ("socks5", "socks5h", "http", "https"):
        raise ctx.fail(node, where, f"{value!r} is not a socks5:// or http:// proxy URL")
    return value


def _upload(node: yaml.Node, where: str, ctx: _Ctx) -> Upload:
    schema: Mapping[str, Parser] = {
        "enabled": _bool, "credential": _opt_str, "urls": _list(_url, allow_empty=True), "proxy": _proxy,
        "cacert": _opt_str, "batch_size": _number(1, 5000, integer=True), "interval": _number(1, 86400),
        "max_pending_days": _number(1, 36500, integer=True),
    }
    values, _ = _fields(node, where, ctx, schema)
    return Upload(**values)


SETTINGS: Mapping[str, Parser] = {
    "probe_id": _opt_str,
    "probe_cc": _str,
    "probe_asn": _str,
    "resolvers": _list(_resolver),
    "control_resolver": _control_resolver,
    "test_helper": _opt_url,
    "ca_bundle": _opt_str,
    "store": _str,
    "retention_days": _number(1, 36500, integer=True),
    "store_buffer_mb": _number(1, 65536, integer=True),
    "concurrency": _number(1, 10000, integer=True),
    "timeouts": _timeouts,
    "control_sni": _hostname,
    "http_max_body": _number(1024, 1 << 30, integer=True),
    "user_agent": _str,
    "interval": _number(1, 86400),
    "jitter": _number(0, 1),
    "retests": _number(0, 20, integer=True),
    "retest_spacing": _number(0.1, 3600),
    "adaptive_interval": _bool,
    "listen": _listen,
    "ipv6": _bool,
    "throughput_max_bytes": _number(16 * 1024, 1 << 30, integer=True),
    "throughput_max_seconds": _number(1, 600),
    "informed_consent": _bool,
    "upload": _upload,
}

TARGET: Mapping[str, Parser] = {
    "name": _name,
    "service": _str,
    "category": _str,
    "host": _opt_hostname,
    "addresses": _list(_address, allow_empty=True),
    "ports": _list(_port),
    "checks": _list(_check_kind),
    "sni": _opt_hostname,
    "control_sni": _opt_hostname,
    "urls": _list(_url, allow_empty=True),
    "alpn": _list(_str, allow_empty=True),
    "control": _bool,
    "control_host": _str,
    "interval": _number(1, 86400),
    "throughput_url": _opt_url,
    "options": _mapping,
}


def _check_retests(settings: Settings, keys: Mapping[str, yaml.Node], ctx: _Ctx) -> None:
    """Re-tests set explicitly must fit in the interval. (With the defaults, a short interval just
    gets the re-tests that fit before its next run: the daemon drops the others.)"""
    name = next((k for k in ("retest_spacing", "retests") if k in keys), None)
    span = settings.retests * settings.retest_spacing
    if name is not None and span >= settings.interval:
        raise ctx.fail(keys[name], f"settings.{name}",
                       f"{settings.retests} re-tests {settings.retest_spacing:g} s apart ({span:g} s) do not "
                       f"fit in the {settings.interval:g} s interval")


def _target(node: yaml.Node, where: str, ctx: _Ctx) -> Target:
    values, _ = _fields(node, where, ctx, TARGET)
    for required in ("name", "service", "category"):
        if required not in values:
            raise ctx.fail(node, where, f"missing required key {required!r}")
    where = f"{where} ({values['name']})"
    for check in values.get("checks", ()):
        problems = option_problems(check, values.get("options", {}))
        if problems is None and check in FAMILY_CHECKS:
            raise RuntimeError(f"the {check!r} family has not registered its option schema: import probe.families")
        if problems:
            raise ctx.fail(node, f"{where}.options", problems[0])
    link_only = values.get("options", {}).get("protocol") == "mtproto"  # the server comes from the link
    if not values.get("host") and not values.get("addresses") and not link_only:
        raise ctx.fail(node, where, "needs a 'host' or 'addresses'")
    if "checks" not in values:
        values["checks"] = ("dns", "tcp", "tls", "http") if values.get("host") else ("tcp",)
    if not values.get("host"):
        needs_host = sorted({"dns", "http"} & set(values["checks"]) - ({"http"} if values.get("urls") else set()))
        if needs_host:
            raise ctx.fail(node, where, f"checks {needs_host} need a 'host'")
    if values.get("category") == "control":
        values.setdefault("control", True)
    return Target(**values, line=node.start_mark.line + 1)


MAX_FILE_BYTES = 1 << 20  # a targets or scenario file; docs/config.md says it
MAX_DEPTH = 32  # nested lists and mappings
MAX_VALUES = 200_000  # scalars, lists and mappings once aliases are expanded
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built


def read_text(path: str | Path) -> str:
    """A YAML file's text, or a ConfigError naming the file (shared by every YAML loader here).

    Only a regular file of at most :data:`MAX_FILE_BYTES` is read: a FIFO or a device
    would block or never end (the open is non-blocking, so a FIFO cannot hang it).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise ConfigError(str(path), None, "", "is not a regular file")
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), None, "", f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(str(path), None, "", f"is larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(str(path), None, "", "is not UTF-8 text") from None


def _line(event: yaml.Event) -> int | None:
    return event.start_mark.line + 1 if event.start_mark is not None else None


def _check_shape(text: str, path: str) -> None:
    """Refuse, from the event stream, documents too big, too deep or that aliases blow up.

    Composition and every walk of the tree recurse and expand aliases; the parser's
    events do not. Each alias counts as the values its anchor holds, so a "billion
    laughs" document stops at :data:`MAX_VALUES` instead of spinning forever.
    """
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(path, None, "", f"is larger than {MAX_FILE_BYTES} bytes")
    depth, values = 0, 0
    sizes: dict[str, int] = {}
    opened: list[tuple[str | None, int]] = []
    for event in yaml.parse(text, Loader=_LOADER):
        if isinstance(event, yaml.AliasEvent):
            values += sizes.get(event.anchor or "", 1)
        elif isinstance(event, yaml.ScalarEvent):
            values += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            depth, values = depth + 1, values + 1
            opened.append((event.anchor, values))
            if depth > MAX_DEPTH:
                raise ConfigError(path, _line(event), "", f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent) and opened:
            depth -= 1
            anchor, first = opened.pop()
            if anchor:
                sizes[anchor] = values - first + 1
        if values > MAX_VALUES:
            raise ConfigError(path, _line(event), "", f"more than {MAX_VALUES} values once aliases are expanded")


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def compose(text: str, path: str) -> yaml.Node:
    """The document's node tree (kept for line numbers), or a ConfigError naming the line."""
    try:
        _check_shape(text, path)
        with _no_gc():  # a node tree has no cycles; the collector's passes over it tripled the time
            root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(path, line, "", f"invalid YAML: {exc.problem}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError(path, line, "", f"invalid YAML: character #x{code:04x} is not allowed") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, "", f"invalid YAML: {exc}") from None
    if root is None:
        raise ConfigError(path, None, "", "the file is empty")
    return root


def load_yaml(path: str | Path) -> Any:
    """Any other YAML file the probe reads (a secrets file), as plain data, within the same limits."""
    return _plain(compose(read_text(path), str(path)))


def load_text(text: str, path: str = "<string>") -> Config:
    """Parse and validate a targets document."""
    ctx = _Ctx(path)
    root = compose(text, path)
    top, nodes = _fields(root, "", ctx, {"settings": lambda n, w, c: n, "targets": lambda n, w, c: n})
    settings = Settings()
    if "settings" in top:
        values, keys = _fields(top["settings"], "settings", ctx, SETTINGS)
        settings = replace(settings, **values)
        _check_retests(settings, keys, ctx)
    if "targets" not in top:
        raise ConfigError(path, root.start_mark.line + 1, "targets", "missing 'targets' list")
    targets_node = top["targets"]
    if not isinstance(targets_node, yaml.SequenceNode) or not targets_node.value:
        raise ctx.fail(targets_node, "targets", "must be a non-empty list")
    targets = tuple(_target(n, f"targets[{i}]", ctx) for i, n in enumerate(targets_node.value))
    seen: dict[str, Target] = {}
    for target in targets:
        if target.name in seen:
            raise ConfigError(
                path, target.line, f"targets ({target.name})",
                f"duplicate name {target.name!r} (first at line {seen[target.name].line})",
            )
        seen[target.name] = target
    if settings.ca_bundle is not None:
        bundle = Path(settings.ca_bundle)
        if not bundle.is_absolute():
            bundle = Path(path).resolve().parent / bundle
            settings = replace(settings, ca_bundle=str(bundle))
        if not bundle.is_file():
            raise ConfigError(path, nodes["settings"].start_mark.line + 1, "settings.ca_bundle",
                              f"{str(bundle)!r} is not a readable file")
    return Config(settings, targets, path)


def load(path: str | Path | None = None) -> Config:
    """Load a targets file (default: the repository's ``targets.yaml``)."""
    file = Path(path) if path is not None else DEFAULT_TARGETS
    return load_text(read_text(file), str(file))
