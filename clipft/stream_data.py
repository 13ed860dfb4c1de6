"""``python -m clipft.stream_data OUT [overrides]``: a dataset as a litdata stream (see :mod:`clipft.pipeline.stream_data`)."""

from clipft.pipeline.stream_data import main

if __name__ == "__main__":
    raise SystemExit(main())
