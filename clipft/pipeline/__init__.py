"""Hydra-facing orchestration: turn a composed config into a trained, tested, reported run.

The only part of clipft that touches Hydra/OmegaConf; the entry points ``train.py`` and
``eval.py`` are two-line wrappers around :func:`run_train` and :func:`run_eval`.
"""

from clipft.pipeline.train import run_train

__all__ = ["run_train"]
