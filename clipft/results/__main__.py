"""``python -m clipft.results``: see :mod:`clipft.results.cli`."""

from clipft.results.cli import main

raise SystemExit(main())
