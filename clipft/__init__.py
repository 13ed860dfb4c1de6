"""clipft: adapt CLIP-style vision-language models (and CNN baselines) to image classification.

The library imports without Hydra: Hydra only lives in the thin entry points
(``train.py``, ``eval.py``) and in :mod:`clipft.pipeline`.
"""

__version__ = "0.1.0"

from clipft.errors import ClipftError, ConfigError, DataError  # noqa: E402

__all__ = ["ClipftError", "ConfigError", "DataError", "__version__", "wire"]


def __getattr__(name: str):
    # lazy, and by name: ``import clipft`` stays light (no torch), and the root package (which every
    # layer imports for __version__) adds no import edge to clipft.data for the layer contract
    if name == "wire":
        import importlib

        return importlib.import_module("clipft.data.base").wire
    raise AttributeError(f"module 'clipft' has no attribute {name!r}")
