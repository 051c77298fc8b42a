"""The running probe: the daemon's scheduler, the one-shot runner, metrics, HTTP endpoints, the test helper.

Above the pipeline and the store, which it drives; below the fleet, the lab and the commands.
"""
