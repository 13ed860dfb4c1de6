"""``python -m clipft.merging``: see :mod:`clipft.merging.cli`."""

from clipft.merging.cli import main

raise SystemExit(main())
