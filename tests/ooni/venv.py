"""A separate venv with OONI's reader, ``oonidata``, for the tests in this folder.

oonidata 0.3.0 pins ``cryptography~=38`` and ``pyopenssl~=22``, which conflict with ours (installed
into the probe's environment they break aioquic's import), so it lives in its own venv, never ours.
scripts/test builds it (``python -m tests.ooni.venv``); the ``oonidata_python`` fixture reuses it, or
builds it when missing (that needs PyPI). ``PROBE_OONIDATA_VENV`` chooses the place.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

OONIDATA = "oonidata==0.3.0"
DEFAULT = Path("/var/tmp/probe-oonidata-venv")


def location() -> Path:
    return Path(os.environ.get("PROBE_OONIDATA_VENV") or DEFAULT)


def ensure(venv: Path | None = None) -> Path:
    """The venv's python, with oonidata importable; built once (a ``.ready`` file marks it done)."""
    venv = venv or location()
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            shutil.rmtree(venv, ignore_errors=True)
            base = shutil.which("python3") or sys.executable
            subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", OONIDATA],
                           check=True, timeout=600)
            subprocess.run([str(python), "-c", "import oonidata.dataclient"], check=True, timeout=120)
            ready.write_text(OONIDATA + "\n")
    return python


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
