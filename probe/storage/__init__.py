"""Data at rest: the local SQLite store and the research exports (jsonl, csv, parquet).

Imports :mod:`probe.core` and :mod:`probe.analysis` only; the service and the commands use it.
"""
