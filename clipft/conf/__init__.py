"""clipft's Hydra configs, shipped in the package: ``clipft-train`` / ``train.py`` read them as ``pkg://clipft.conf``."""
