"""The fleet: where the upload queue, the collector and the central store live.

Above the service: a probe's daemon hands finished measurements to the fleet's upload queue;
the collector is a service of its own. Nothing below this layer may import it.
"""
