"""Where families of checks plug in their option schemas, so the config loader knows no family.

A target's ``options`` mapping belongs to the family that reads it (``circumvention``,
``diagnostics``). Each family registers a schema here when it is imported: a function that
returns the problems with a mapping (empty when it is fine). :mod:`probe.core.config` consults
the registry at load; it imports no family. :mod:`probe.families` imports every family once,
which is what the command line, the pipeline and the daemon do before they load a file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

OptionSchema = Callable[[Mapping[str, Any]], list[str]]

_SCHEMAS: dict[str, OptionSchema] = {}


def register_options(check: str, schema: OptionSchema) -> None:
    """Declare that ``check`` reads a target's ``options`` and how to validate them."""
    _SCHEMAS[check] = schema


def option_problems(check: str, options: Mapping[str, Any]) -> list[str] | None:
    """The problems of ``options`` for ``check``; None when no family registered ``check``."""
    schema = _SCHEMAS.get(check)
    return None if schema is None else schema(options)
