"""``python -m probe``: the same as the ``probe`` console script."""

from probe.cli import main

raise SystemExit(main())
