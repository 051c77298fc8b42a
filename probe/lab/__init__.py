"""The censorship lab: network namespaces with real censor mechanisms, for tests, demos and research.

    from probe.lab import Lab
    with Lab("plab") as lab:                      # client ─ censor router(s) ─ servers
        lab.apply("sni_rst", sni="web.telegram.test")
        records = lab.run_probe(lab.targets_yaml(["web.telegram.test"]))

See docs/lab.md for the topology, the techniques and their parameters.
"""

from probe.lab import techniques  # noqa: F401  (registers the techniques Lab.apply looks up)
from probe.lab.base import Handle, LabError
from probe.lab.lab import Lab, down, namespaces
from probe.lab.topology import HOSTS, Host

__all__ = ["HOSTS", "Handle", "Host", "Lab", "LabError", "down", "namespaces"]
