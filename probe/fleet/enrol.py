"""``probe enrol``: trade an enrolment token for this probe's own credential, and keep it safe.

The credential is written to ``$XDG_CONFIG_HOME/probe/fleet.json`` (``~/.config`` when unset),
created with mode 0600 in a 0700 directory, under a temporary name renamed into place, so it is
never readable by others, not even for a moment. The collector keeps only its SHA-256.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


class EnrolError(Exception):
    """Enrolment failed; the message says why in plain words."""


@dataclass(frozen=True)
class Enrolment:
    urls: tuple[str, ...]       # the collector first, then mirrors, tried in this order
    probe_id: str
    credential: str
    proxy: str | None = None
    test_helper: str | None = None  # the collector's test helper: the probe's control vantage by default


def tls_verify(cacert: str | None) -> ssl.SSLContext | bool:
    """What to verify the collector's certificate with: the system's CAs, or ``cacert``'s."""
    return ssl.create_default_context(cafile=cacert) if cacert else True


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "probe" / "fleet.json"


def save(enrolment: Enrolment, path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"urls": list(enrolment.urls), "probe_id": enrolment.probe_id,
                   "credential": enrolment.credential, "proxy": enrolment.proxy,
                   "test_helper": enrolment.test_helper}, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> Enrolment:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return Enrolment(tuple(data["urls"]), str(data["probe_id"]), str(data["credential"]), data.get("proxy"),
                         data.get("test_helper"))
    except FileNotFoundError:
        raise EnrolError(f"{path}: not enrolled yet (run: probe enrol URL TOKEN)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise EnrolError(f"{path}: unreadable enrolment file ({exc})") from None


def enrol(urls: Sequence[str], token: str, *, probe_id: str | None = None, proxy: str | None = None,
          verify: Any = True, timeout_s: float = 30.0) -> Enrolment:
    """Ask the collectors, in order, for a credential; the first that answers decides."""
    last = "no collector URL given"
    body: dict[str, Any] = {"token": token}
    if probe_id:
        body["probe_id"] = probe_id
    with httpx.Client(proxy=proxy, verify=verify, timeout=timeout_s) as client:
        for url in urls:
            try:
                response = client.post(f"{url.rstrip('/')}/v1/enrol", json=body)
            except httpx.HTTPError as exc:
                last = f"{url}: cannot reach the collector ({type(exc).__name__})"
                continue
            if response.status_code == 200:
                data = response.json()
                return Enrolment(tuple(u.rstrip("/") for u in urls), str(data["probe_id"]),
                                 str(data["credential"]), proxy, f"{url.rstrip('/')}/helper")
            try:
                detail = response.json().get("error", response.text)
            except ValueError:
                detail = response.text[:200]
            raise EnrolError(f"{url}: enrolment refused ({response.status_code}): {detail}")
    raise EnrolError(last)
