"""The metrics path of a fleet probe: vmagent scrapes the local ``/metrics`` and remote-writes it.

Volunteers sit behind NAT, so nothing may need an inbound port: the central VictoriaMetrics never
scrapes a probe. On each probe's host, vmagent (Debian package ``victoria-metrics``; unit
``deploy/vmagent/vmagent.service``) scrapes ``http://127.0.0.1:9810/metrics`` and pushes the
samples to the central store with the Prometheus remote-write protocol. Samples that cannot be
sent (the store or the link is down) go to a disk buffer (``-remoteWrite.tmpDataPath``, bounded by
``-remoteWrite.maxDiskUsagePerURL``) and are sent, with their original timestamps, once the store
answers again; so an outage leaves no gap (tests/fleet/test_vmagent_e2e.py, bench/vmagent_soak.py).

Every series gets the probe's identity as labels (``-remoteWrite.label``): ``probe`` (the fleet's
probe id), ``cc`` (ISO country code) and ``asn`` (``AS`` and the number); the scrape sets
``instance`` to the probe id too, so the per-probe dashboards' probe selector (``instance``) lists
the fleet's probes by name. docs/fleet.md ("Metrics path") says why vmagent and not Prometheus'
agent mode.

Only what the fleet's dashboards and alerts read leaves the volunteer's machine
(:data:`CENTRAL_FAMILIES`, a ``keep`` rule in ``-remoteWrite.urlRelabelConfig``): each service's
state and the newest result's time (the probe rolls its verdicts up itself,
probe.analysis.service_state), ongoing events, build, health and upload series, and ``up``. The
per-target families (about 1,400 series with the default targets: checks, phases, verdicts per
type) and the histograms stay on the probe: its own ``/metrics`` is complete, for the volunteer
and for any Prometheus scraping it. At 10,000 probes that is about 440,000 series centrally
instead of 15 million (docs/metrics.md, bench/fleet_metrics.py).

:func:`vmagent_config` writes the files for one probe (``probe enrol`` calls it); I/O is only
the writing of those files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

#: Where the Debian unit (deploy/vmagent/vmagent.service) reads its files.
DEFAULT_DIR: Final = Path("/etc/probe/vmagent")
DEFAULT_BUFFER: Final = Path("/var/lib/probe-vmagent")
#: Default bound of the disk buffer. vmagent stores it in chunks of about 500 MB, so that is the
#: smallest useful bound; 1 GB holds months of one probe's ~45 series sent centrally at a 30 s interval.
DEFAULT_MAX_DISK: Final = "1GB"
_PROBE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_CC = re.compile(r"^[A-Z]{2}$")
_UNSAFE = re.compile(r"[\s\"'\\$`]")

#: The families sent to the central store (exposition names: counters with ``_total``); vmagent
#: drops every other series before remote write, its own ``scrape_*`` series included.
CENTRAL_FAMILIES: Final[tuple[str, ...]] = (
    "up",  # vmagent's: the daemon answered the scrape (fleet health, ProbeDown)
    "probe_build_info",  # the dashboards' probe list
    "probe_service_state", "probe_last_result_timestamp_seconds",  # the fleet dashboard's cells and result age
    "probe_event_active", "probe_event_start_timestamp_seconds",  # ongoing events only: 2 series each
    "probe_config_last_reload_successful", "probe_start_time_seconds", "probe_targets",  # health
    "probe_measurements_total", "probe_store_writable", "probe_store_write_errors_total",
    "probe_store_records_dropped_total",
    "probe_upload_pending", "probe_upload_last_success_timestamp_seconds", "probe_upload_errors_total",
    "probe_upload_expired_total",
)


def remote_write_relabel() -> list[dict[str, object]]:
    """The ``-remoteWrite.urlRelabelConfig`` rules: keep :data:`CENTRAL_FAMILIES`, drop the rest."""
    return [{"action": "keep", "source_labels": ["__name__"], "regex": "|".join(CENTRAL_FAMILIES)}]


@dataclass(frozen=True)
class VmagentFiles:
    """What :func:`vmagent_config` wrote, and the command line that runs vmagent with it."""

    scrape_config: Path   # the -promscrape.config file
    relabel_config: Path  # the -remoteWrite.urlRelabelConfig file: what is sent centrally
    env_file: Path        # VMAGENT_ARGS=... for the systemd unit's EnvironmentFile=
    password_file: Path | None
    args: tuple[str, ...]  # the flags, for a caller that starts vmagent itself


def asn_label(asn: int | str) -> str:
    """``AS3320`` from 3320, ``"3320"`` or ``"AS3320"``; ValueError for anything else."""
    digits = str(asn).upper().removeprefix("AS")
    if not digits.isdigit() or not 0 < int(digits) < 2**32:
        raise ValueError(f"not an AS number: {asn!r}")
    return f"AS{int(digits)}"


def scrape_config(probe_id: str, metrics_address: str = "127.0.0.1:9810", interval_seconds: int = 30,
                  ) -> dict[str, object]:
    """The vmagent ``-promscrape.config``: the local daemon's /metrics, instance set to the probe id."""
    return {
        "global": {"scrape_interval": f"{interval_seconds}s", "scrape_timeout": f"{min(interval_seconds, 10)}s"},
        "scrape_configs": [{
            "job_name": "probe",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [metrics_address], "labels": {"instance": probe_id}}],
        }],
    }


def vmagent_config(directory: Path, *, probe_id: str, cc: str, asn: int | str, remote_write_url: str,
                   username: str | None = None, password: str | None = None,
                   metrics_address: str = "127.0.0.1:9810", interval_seconds: int = 30,
                   buffer_dir: Path = DEFAULT_BUFFER, max_disk_usage: str = DEFAULT_MAX_DISK,
                   listen: str = "127.0.0.1:8429") -> VmagentFiles:
    """Write one probe's vmagent configuration into ``directory`` and return its files and flags.

    ``remote_write_url`` is the central store's write endpoint (VictoriaMetrics:
    ``https://metrics.example.org/api/v1/write``); ``username``/``password`` are its basic-auth
    credentials (the password goes to a 0600 file, never to the command line). ``listen`` is
    vmagent's own HTTP port, loopback only: nothing needs to reach the probe from outside.
    """
    if not _PROBE_ID.match(probe_id):
        raise ValueError(f"probe id must be a short [A-Za-z0-9_.-] name: {probe_id!r}")
    if not _CC.match(cc):
        raise ValueError(f"country must be an ISO 3166 alpha-2 code in capitals: {cc!r}")
    if not remote_write_url.startswith(("https://", "http://")):
        raise ValueError(f"remote-write URL must be http(s): {remote_write_url!r}")
    if (username is None) != (password is None):
        raise ValueError("give both username and password, or neither")
    directory.mkdir(mode=0o750, parents=True, exist_ok=True)
    scrape = directory / "scrape.yml"
    scrape.write_text("# Written by `probe enrol` (probe.fleet.vmagent): vmagent scrapes the local probe.\n"
                      + yaml.safe_dump(scrape_config(probe_id, metrics_address, interval_seconds), sort_keys=False))
    relabel = directory / "remote-write-relabel.yml"
    relabel.write_text("# Written by `probe enrol` (probe.fleet.vmagent): only these series leave this machine.\n"
                       + yaml.safe_dump(remote_write_relabel(), sort_keys=False))
    args = [
        f"-promscrape.config={scrape}",
        f"-remoteWrite.url={remote_write_url}",
        f"-remoteWrite.urlRelabelConfig={relabel}",
        f"-remoteWrite.tmpDataPath={buffer_dir}",
        f"-remoteWrite.maxDiskUsagePerURL={max_disk_usage}",
        f"-remoteWrite.label=probe={probe_id}",
        f"-remoteWrite.label=cc={cc}",
        f"-remoteWrite.label=asn={asn_label(asn)}",
        f"-httpListenAddr={listen}",
        "-promscrape.suppressScrapeErrorsDelay=5m",  # the daemon restarting is not worth a log line a second
    ]
    password_file = None
    if username is not None and password is not None:
        password_file = directory / "remote-write.password"
        _write_secret(password_file, password)
        args += [f"-remoteWrite.basicAuth.username={username}",
                 f"-remoteWrite.basicAuth.passwordFile={password_file}"]
    unsafe = [a for a in args if _UNSAFE.search(a)]
    if unsafe:  # systemd splits $VMAGENT_ARGS on white space and has no shell quoting
        raise ValueError(f"white space or quotes in a vmagent flag: {unsafe}")
    env = directory / "vmagent.env"
    env.write_text("# Written by `probe enrol` (probe.fleet.vmagent); read by vmagent.service.\n"
                   f'VMAGENT_ARGS="{" ".join(args)}"\n')
    return VmagentFiles(scrape, relabel, env, password_file, tuple(args))


def _write_secret(path: Path, secret: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    os.replace(tmp, path)
