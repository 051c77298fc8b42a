"""The vocabulary every other part speaks: records, failures, config, context.

The bottom layer: it imports nothing else of ``probe`` (docs/design/architecture.md).
Families of checks plug their option schemas in through :mod:`probe.core.registry`,
so the config loader knows no family.
"""
