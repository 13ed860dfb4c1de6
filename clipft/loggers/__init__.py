"""Lightning loggers with what clipft's runs need beyond the stock ones."""

from clipft.loggers.wandb import WandbLogger, run_label

__all__ = ["WandbLogger", "run_label"]
