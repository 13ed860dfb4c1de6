"""``python -m clipft.soup SWEEP_DIR [--greedy]``: model soups of a sweep (see :mod:`clipft.pipeline.soup`)."""

from clipft.pipeline.soup import main

if __name__ == "__main__":
    raise SystemExit(main())
