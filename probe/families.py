"""Every family of checks that reads a target's ``options``, imported once.

Importing this module registers each family's option schema with :mod:`probe.core.registry`,
so that :mod:`probe.core.config` validates ``options`` at load without importing a family.
The command line, the pipeline and the daemon import it before they load a targets file.
A new family adds one line here.
"""

from __future__ import annotations

import probe.circumvention
import probe.diagnostics

FAMILIES = (probe.circumvention, probe.diagnostics)
