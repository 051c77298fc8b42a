"""How verdict values look in the terminal tables of ``probe run`` and ``probe show``."""

from __future__ import annotations

from typing import Any


def accessible_cell(value: Any) -> str:
    return {True: "[green]yes[/]", False: "[red]no[/]"}.get(value, "[yellow]?[/]")


def blocking_cell(value: Any) -> str:
    if value is False:
        return "[green]no[/]"
    if value is None:
        return "[yellow]inconclusive[/]"
    return f"[bold red]{value}[/]"
