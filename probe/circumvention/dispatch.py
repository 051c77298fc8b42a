"""From a target's ``options`` to the family's checks (the pipeline's one entry point).

The schema (docs/circumvention.md has examples)::

    options:
      protocol: openvpn | wireguard | mtproto | socks5 | http_connect | tor_or | tor_dir | obfs4
      timeout: 5                      # seconds to wait for an answer (default: settings.timeouts.tls)
      # openvpn:   transport (udp|tcp), tls_auth, key_direction (0|1|none), auth (SHA1...), tls_crypt
      # wireguard: server_public_key, client_private_key, preshared_key
      # mtproto:   link (tg://proxy?... or https://t.me/proxy?...), dc
      # socks5:    connect_to (host:port), username, password
      # http_connect: connect_to
      # obfs4:     cert, iat_mode, obfs4proxy (binary)
      secrets_file: /etc/probe/secrets.yaml   # a mapping merged into these options

Any string value ``file:/path`` is replaced by that file's content. Secrets (the keys,
link, passwords, cert) go only to the checks; records carry ``secret_sha256``.
The endpoints are the target's ``addresses`` x ``ports`` (at most 4 x 4); mtproto
takes its server and port from the link.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Literal

from probe.circumvention import INCONCLUSIVE, CircumventionDetails, make_result, validate
from probe.core import failures
from probe.core.config import Target, load_yaml, read_text
from probe.core.context import Context
from probe.core.records import CheckResult

MAX_ENDPOINTS: Final = 16
Check = Callable[[str, int], Awaitable[CheckResult[CircumventionDetails]]]



def resolve_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``secrets_file`` and read ``file:`` values (raises ValueError: a ConfigError naming the file)."""
    merged = dict(options)
    if "secrets_file" in merged:
        loaded = load_yaml(str(merged.pop("secrets_file")))  # bounded: no alias bomb, FIFO or huge file
        if not isinstance(loaded, dict):
            raise ValueError("secrets_file must hold a mapping")
        merged.update(loaded)
    for key, value in list(merged.items()):
        if isinstance(value, str) and value.startswith("file:"):
            merged[key] = read_text(value[5:]).strip()
    return merged


def _checks(protocol: str, o: Mapping[str, Any], ctx: Context, target: str) -> Check:
    timeout = float(o["timeout"]) if "timeout" in o else None
    if protocol == "openvpn":
        from probe.circumvention.openvpn import TLSAuth, TLSCrypt, check_openvpn

        direction = o.get("key_direction", 1)
        tls_auth = TLSAuth.from_text(str(o["tls_auth"]), None if direction in (None, "none") else int(direction),
                                     str(o.get("auth", "SHA1"))) if o.get("tls_auth") else None
        tls_crypt = TLSCrypt.from_text(str(o["tls_crypt"])) if o.get("tls_crypt") else None
        transport: Literal["udp", "tcp"] = "tcp" if o.get("transport") == "tcp" else "udp"
        return lambda a, p: check_openvpn(a, p, ctx, target=target, transport=transport, tls_auth=tls_auth,
                                          tls_crypt=tls_crypt, timeout=timeout)
    if protocol == "wireguard":
        from probe.circumvention.wireguard import check_wireguard

        return lambda a, p: check_wireguard(
            a, p, ctx, target=target, server_public_key=str(o["server_public_key"]),
            client_private_key=o.get("client_private_key"), preshared_key=o.get("preshared_key"), timeout=timeout)
    if protocol in ("socks5", "http_connect"):
        from probe.circumvention.proxies import check_http_connect, check_socks5

        if protocol == "socks5":
            return lambda a, p: check_socks5(a, p, ctx, target=target, connect_to=o.get("connect_to"),
                                             username=o.get("username"), password=o.get("password"), timeout=timeout)
        return lambda a, p: check_http_connect(a, p, ctx, target=target, connect_to=o.get("connect_to"),
                                               timeout=timeout)
    from probe.circumvention import tor

    if protocol == "tor_or":
        return lambda a, p: tor.check_tor_or(a, p, ctx, target=target, timeout=timeout)
    if protocol == "tor_dir":
        return lambda a, p: tor.check_tor_dir(a, p, ctx, target=target, timeout=timeout)
    return lambda a, p: tor.check_obfs4(a, p, ctx, target=target, cert=str(o["cert"]),
                                        iat_mode=int(o.get("iat_mode", 0)),
                                        obfs4proxy=str(o.get("obfs4proxy", "obfs4proxy")), timeout=timeout)


def _config_problem(target: Target, protocol: str, message: str, ctx: Context) -> CheckResult[CircumventionDetails]:
    address = target.addresses[0] if target.addresses else (target.host or "-")
    details = CircumventionDetails(protocol=protocol, status=INCONCLUSIVE, transport="-", address=address,
                                   port=target.ports[0] if target.ports else 0, evidence=message)
    return make_result(details, target=target.name, role="target", start=ctx.clock(), runtime=0.0,
                       failure=f"{failures.UNKNOWN_PREFIX}: {message}", failed_operation="connect")


async def measure(target: Target, ctx: Context,
                  addresses: Sequence[str] | None = None) -> list[CheckResult[CircumventionDetails]]:
    """Run the target's circumvention checks, endpoints concurrently; never raises.

    ``addresses``: the pipeline's resolved addresses (default: the target's ``addresses``).
    """
    protocol = str(target.options.get("protocol", ""))
    problems = validate(target.options)
    if problems and "secrets_file" not in target.options:
        return [_config_problem(target, protocol or "-", problems[0], ctx)]
    try:
        options = resolve_options(target.options)
        problems = validate(options)
        if problems:
            return [_config_problem(target, protocol, problems[0], ctx)]
        if protocol == "mtproto":
            from probe.circumvention.mtproto import check_mtproto

            timeout = float(options["timeout"]) if "timeout" in options else None
            return [await check_mtproto(str(options["link"]), ctx, target=target.name, dc=int(options.get("dc", 2)),
                                        timeout=timeout)]
        check = _checks(protocol, options, ctx, target.name)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Never echo the value: it may be a secret. The exception type and key name are enough.
        return [_config_problem(target, protocol, f"bad options ({type(exc).__name__})", ctx)]
    endpoints = [(a, p) for a in (target.addresses if addresses is None else addresses)
                 for p in target.ports][:MAX_ENDPOINTS]
    if not endpoints:
        return [_config_problem(target, protocol, "no addresses to test", ctx)]
    return list(await asyncio.gather(*(check(a, p) for a, p in endpoints)))
