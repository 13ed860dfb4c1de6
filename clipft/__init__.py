"""clipft: adapt CLIP-style vision-language models (and CNN baselines) to image classification.

The library imports without Hydra: Hydra only lives in the thin entry points
(``train.py``, ``eval.py``) and in :mod:`clipft.pipeline`.
"""

__version__ = "0.1.0"

from clipft.errors import ClipftError, ConfigError, DataError  # noqa: E402

__all__ = ["ClipftError", "ConfigError", "DataError", "__version__"]
