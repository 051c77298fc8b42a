"""Bad targets files through the real CLI and through a real daemon's SIGHUP.

Every file must give exit 2 (or a failed reload, with probe_config_last_reload_successful at 0
and the daemon still measuring with its old configuration) and a message naming the file and the
problem, in bounded time. Before: an alias bomb spun forever, a NUL byte and deep nesting were
tracebacks (exit 1, and the reload metric stayed at 1), a 5 MB file took 25 s and a FIFO
blocked forever. The time bound is generous for a loaded CI machine (they take ~0.3 s).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hostile.files import BAD_FILES, GOOD_TARGET, HEAD, write_bad
from tests.service.test_daemon import ROOT, free_port, scrape, start_daemon, stop, wait_for

BOUND = 10.0  # seconds; before the fix, infinite for the alias bomb and the FIFO


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_validate_refuses_a_bad_file_with_exit_2_naming_file_and_problem(name: str, tmp_path: Path) -> None:
    path = write_bad(name, tmp_path)
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "probe", "targets", "validate", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    elapsed = time.monotonic() - t0
    assert done.returncode == 2, done.stderr[-2000:]
    assert str(path) in done.stderr and BAD_FILES[name][1] in done.stderr
    assert "Traceback" not in done.stderr
    assert elapsed < BOUND


def checks_total(port: int) -> int:
    text = scrape(port)
    return sum(int(float(v)) for v in re.findall(r"^probe_checks_total\{[^}]*\} (\S+)$", text, re.M))


def test_sighup_with_each_bad_file_keeps_measuring_and_sets_the_metric_to_0(tmp_path: Path) -> None:
    targets, port = tmp_path / "targets.yaml", free_port()
    good = HEAD + GOOD_TARGET
    targets.write_text(good)
    proc = start_daemon(targets, tmp_path / "probe.sqlite", port)
    try:
        wait_for(lambda: checks_total(port) > 0, 20, "a first measurement")
        for name in sorted(BAD_FILES):
            bad = write_bad(name, tmp_path)
            bad.replace(targets)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "probe_config_last_reload_successful 0.0" in scrape(port), BOUND,
                     f"a failed reload for {name}")
            before = checks_total(port)
            wait_for(lambda b=before: checks_total(port) > b, BOUND, f"measuring after {name}")
            targets.unlink()
            targets.write_text(good)
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "probe_config_last_reload_successful 1.0" in scrape(port), BOUND, "a good reload")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        _, err = stop(proc)
    failed = [line for line in err.splitlines() if "reload failed" in line]
    assert len(failed) == len(BAD_FILES), err[-3000:]
    for name in BAD_FILES:
        assert any(BAD_FILES[name][1] in line for line in failed), name
    assert "Traceback" not in err


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_circumvention_secret_files_have_the_same_limits(name: str, tmp_path: Path) -> None:
    # A secrets_file went through yaml.safe_load (an alias bomb built its billions of strings) and
    # a file: value through read_text (a FIFO blocked the measurement forever).
    from probe.circumvention.dispatch import resolve_options

    path = write_bad(name, tmp_path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        resolve_options({"secrets_file": str(path)})
    if name in ("fifo", "five-mb"):
        with pytest.raises(ValueError, match=BAD_FILES[name][1]):
            resolve_options({"tls_auth": f"file:{path}"})


@pytest.mark.parametrize("loader", ["libyaml", "pure-python"])
@pytest.mark.parametrize("name", ["alias-bomb", "nested-50000", "nul-byte"])
def test_the_limits_hold_without_libyaml_too(name: str, loader: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from probe.core import config

    if loader == "pure-python":
        monkeypatch.setattr(config, "_LOADER", yaml.SafeLoader)
    elif not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML built without libyaml")
    path = write_bad(name, tmp_path)
    with pytest.raises(config.ConfigError, match=re.escape(str(path))) as caught:
        config.load(path)
    assert BAD_FILES[name][1] in str(caught.value)
