"""One module per check. Each step is ``async (inputs..., ctx) -> CheckResult[Details]``.

Steps never raise for network outcomes: a failure is a result with an OONI
failure string from :mod:`probe.core.failures`. ``probe.pipeline`` composes them.
"""
