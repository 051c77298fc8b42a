"""Shared fixtures: a test CA (trustme), server certificates, a Context for loopback tests."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

import probe.families  # noqa: F401  (registers the families' option schemas)
from probe.core.config import Settings, Timeouts
from probe.core.context import Context
from probe.core.records import ProbeMeta


def pytest_configure(config: pytest.Config) -> None:
    """Tests measure without asking (informed consent is the operator's, given here for the suite; the
    subprocesses inherit it), and never read or write the real user's configuration."""
    os.environ["PROBE_INFORMED_CONSENT"] = "1"
    home = Path(tempfile.mkdtemp(prefix="probe-test-home-"))
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")
    os.environ["XDG_DATA_HOME"] = str(home / "data")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Lab tests need root (network namespaces): skip them, saying so, when not root."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root for network namespaces (CI runs as root)")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def other_ca() -> trustme.CA:
    """A CA nobody trusts: an interception certificate comes from here."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA, *names: str, expired: bool = False) -> ssl.SSLContext:
    if expired:
        cert = ca.issue_cert(*names, not_after=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    else:
        cert = ca.issue_cert(*names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@pytest.fixture(scope="session")
def good_tls(ca: trustme.CA) -> ssl.SSLContext:
    return server_context(ca, "good.test")


def make_context(ca_file: Path, **settings: object) -> Context:
    timeouts = Timeouts(dns=1.5, connect=1.5, tls=1.5, http=3.0)
    base = Settings(ca_bundle=str(ca_file), timeouts=timeouts, http_max_body=256 * 1024)
    values = {**base.__dict__, **settings}
    return Context(settings=Settings(**values), meta=ProbeMeta(probe_id="probe-test"))


@pytest.fixture
def ctx(ca_file: Path) -> Context:
    return make_context(ca_file)


#: Tests that exercise failures run on both event loops: the product runs on uvloop
#: (probe.service.runner.run_loop) and a loop must never change a verdict (issue 14, class 5).
_BOTH_LOOPS: tuple[str, ...] = ("tests/checks/", "tests/circumvention/", "tests/test_pipeline_loopback.py")


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, LoopFactory]:
    """asyncio's loop everywhere; uvloop too for the failure-exercising tests (when installed)."""
    factories: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    if any(part in item.nodeid for part in _BOTH_LOOPS):
        with contextlib.suppress(ImportError):
            import uvloop

            factories["uvloop"] = uvloop.new_event_loop
    return factories
