"""What enrolment changes in a probe's configuration (upload on): its control vantage, and the
collector measured like any target.

- ``settings.test_helper``: without one in the targets file, the enrolled collector's test
  helper (``URL/helper``, written by ``probe enrol``) is the probe's control vantage.
- A target ``collector`` (service ``fleet``, category ``fleet``): each collector URL measured
  with the same pipeline as every target (dns, tcp, tls, http to ``/healthz``), so that a
  collector blocked where the probe is shows up as a measurement, uploaded like the others once
  a way through is found (a mirror, a proxy).

:func:`amend` is applied by ``probe daemon`` at start and on every reload.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from probe.core.config import Config, Target
from probe.fleet.enrol import EnrolError, Enrolment, config_path, load

SERVICE = "fleet"


def collector_targets(urls: tuple[str, ...]) -> list[Target]:
    """One target per collector URL: ``collector``, ``collector-2``, ..."""
    out: list[Target] = []
    for n, url in enumerate(urls, 1):
        parts = urlsplit(url)
        host = parts.hostname or ""
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        try:
            ipaddress.ip_address(host)
            literal = True
        except ValueError:
            literal = False
        checks: tuple[str, ...] = ("tcp",) if literal else ("dns", "tcp")
        checks += ("tls", "http") if secure else ("http",)
        out.append(Target(
            name="collector" if n == 1 else f"collector-{n}", service=SERVICE, category=SERVICE,
            host=None if literal else host, addresses=(host,) if literal else (), ports=(port,), checks=checks,
            urls=(f"{url.rstrip('/')}/healthz",),
        ))
    return out


def enrolment_of(cfg: Config) -> Enrolment | None:
    upload = cfg.settings.upload
    path = Path(upload.credential).expanduser() if upload.credential else config_path()
    try:
        return load(path)
    except EnrolError:
        return None


def amend(cfg: Config) -> Config:
    """``cfg`` with the enrolled collector's helper as default control vantage and its URLs as
    targets (unchanged when upload is off or the probe is not enrolled)."""
    if not cfg.settings.upload.enabled:
        return cfg
    enrolment = enrolment_of(cfg)
    if enrolment is None:
        return cfg
    settings = cfg.settings
    if not settings.test_helper and enrolment.test_helper:
        settings = dataclasses.replace(settings, test_helper=enrolment.test_helper)
    taken = {t.name for t in cfg.targets}
    urls = tuple(cfg.settings.upload.urls) or enrolment.urls
    extra = tuple(t for t in collector_targets(urls) if t.name not in taken)
    return dataclasses.replace(cfg, settings=settings, targets=cfg.targets + extra)
