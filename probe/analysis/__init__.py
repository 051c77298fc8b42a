"""Pure decisions over records: verdicts, throttling, events, re-tests, block-page fingerprints.

No I/O and no clock: every function here takes records (and times) and returns a decision, so it
is tested table-driven. Imports only :mod:`probe.core`.
"""
