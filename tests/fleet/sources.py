"""An in-memory upload cursor for the tests."""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from probe.fleet.localpg import sample_measurement


def measurements(probe_id: str, n: int, **kwargs: Any) -> list[dict[str, Any]]:
    now = time.time()
    return [sample_measurement(probe_id, now - i * 0.001, index=i, **kwargs) for i in range(n)]


class ListSource:
    def __init__(self, items: Sequence[Mapping[str, Any]]) -> None:
        self.items = {str(m.get("measurement_uid", i)): m for i, m in enumerate(items)}
        self.uploaded: list[Hashable] = []
        self.rejected: dict[Hashable, str] = {}

    def pending(self, limit: int) -> list[tuple[Hashable, Mapping[str, Any]]]:
        done = set(self.uploaded) | set(self.rejected)
        return [(k, m) for k, m in self.items.items() if k not in done][:limit]

    def mark_uploaded(self, keys: Sequence[Hashable]) -> None:
        self.uploaded.extend(keys)

    def mark_rejected(self, keys: Sequence[Hashable], reasons: Sequence[str]) -> None:
        self.rejected.update(zip(keys, reasons, strict=True))
