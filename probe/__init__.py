"""probe: network reachability and throttling measurement.

See README.md for the two commands that set it up, and docs/ for the design.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
