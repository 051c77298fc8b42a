"""``probe show --unknown-blockpages``: pages unlike the reference, with no fingerprint, most common first,
read back from the store (what a researcher uses to grow probe/data/blockpages.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probe.cli import main
from probe.core.records import ProbeMeta, Verdict, verdict_record
from probe.storage.store import Store

T0 = 1_790_000_000.0


def _verdict(i: int, target: str, rule: str, title: str, sha: str, location: str | None = None) -> dict[str, object]:
    diff = {"outcome": "different", "probe": {"url": f"http://{target}/", "status": 302 if location else 200,
                                              "title": title, "body_sha256": sha, "location": location}}
    blocking = "http-diff" if rule == "http_diff" else None
    return verdict_record(Verdict(target, "news", "news", False if blocking else None, blocking, rule, "r",
                                  T0 + i, details={"http_diff": diff}), ProbeMeta(probe_id=f"p{i % 2}"))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "store.sqlite"
    records = [_verdict(0, "a.test", "http_diff", "Access denied", "h1"),
               _verdict(1, "b.test", "http_diff", "Access denied", "h1"),
               _verdict(2, "c.test", "http_unverified_diff", "Access denied", "h1"),
               _verdict(3, "a.test", "http_diff", "", "h2", location="http://warn.isp.test/?u=a"),
               _verdict(4, "d.test", "accessible", "Fine", "h3")]
    with Store(path, retention_days=None) as store:
        store.append(records)
    return path


def test_unknown_blockpages_json(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "--store", str(store_path), "--unknown-blockpages", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["title"], r["body_sha256"], r["count"], r["targets"]) for r in rows] == [
        ("Access denied", "h1", 3, ["a.test", "b.test", "c.test"]), ("", "h2", 1, ["a.test"])]
    assert rows[1]["location_host"] == "warn.isp.test" and rows[0]["probes"] == ["p0", "p1"]


def test_unknown_blockpages_table(store_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["show", "--store", str(store_path), "--unknown-blockpages"]) == 0
    out = capsys.readouterr().out
    assert "Access denied" in out and "warn.isp.test" in out and "Fine" not in out
