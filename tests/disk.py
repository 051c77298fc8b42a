"""Real disk faults for the durability tests: a tiny tmpfs that fills, read-only remounts, checks.

Mounting needs root (the CI runs as root); tests skip with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(directory: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``directory`` for the block (unmounted after, even on failure)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(directory)], capture_output=True, check=False)
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def remount(directory: Path, mode: str) -> None:
    """``mode`` "ro" or "rw": root ignores file modes, a read-only mount it cannot ignore."""
    subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)], check=True, capture_output=True)


def fill(path: Path, leave: int = 0) -> int:
    """Write ``path`` until the file system is full (less ``leave`` bytes); returns its size."""
    written = 0
    block = b"\0" * 4096
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                written += f.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    if leave:
        os.truncate(path, max(0, written - leave))
        written = max(0, written - leave)
    return written


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection; immutable where the WAL index cannot be created (full or read-only
    file system, no writer open)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master")
    except sqlite3.OperationalError:
        conn.close()
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    return conn


def problems(path: Path) -> list[str]:
    """``PRAGMA integrity_check``, the foreign-key check and orphan records (records whose envelope
    does not exist), read through a fresh connection: empty when the store is clean."""
    conn = connect_ro(path)
    try:
        found = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        if found == ["ok"]:
            found = []
        found += [f"foreign key: {row}" for row in conn.execute("PRAGMA foreign_key_check")]
        orphans = conn.execute(
            "SELECT count(*) FROM records WHERE eid NOT IN (SELECT eid FROM envelopes)").fetchone()[0]
        if orphans:
            found.append(f"{orphans} orphan records")
    finally:
        conn.close()
    return found


def stored_ids(path: Path, record_type: str | None = None) -> set[str]:
    conn = connect_ro(path)
    try:
        sql = "SELECT id FROM records" + (" WHERE record_type = ?" if record_type else "")
        return {row[0] for row in conn.execute(sql, (record_type,) if record_type else ())}
    finally:
        conn.close()
