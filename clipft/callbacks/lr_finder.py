"""Lightning's ``LearningRateFinder``, run to its end whatever the run's epochs, and recorded.

* **The whole search.** Lightning's range test trains ``num_training_steps`` steps through the
  trainer's own fit loop, which still stops at ``trainer.max_epochs``: with ``max_epochs=1`` and 14
  batches an epoch the search ended after 14 of 100 steps, Lightning called it divergence and set a
  rate from the first, tiny rates of the ramp. Here the epoch limit is lifted for the search only (it
  counts its own steps) and put back before the run trains.
* **A search that ended early is refused** (:class:`~clipft.errors.ConfigError`, one line): fewer steps
  than asked without the loss diverging, a divergence too early to read a slope from, or no suggestion.
* **The schedule is rebuilt.** Lightning writes the suggested rate into the module's ``lr``
  (``ClassificationModule.lr`` is ``optimizer.lr``) and the live optimizer, but a scheduler keeps the
  ``base_lrs`` it was built with and puts the old rate back at its first step; clipft's schedules
  (warm-up + cosine / linear) are such schedulers. So the strategy calls ``configure_optimizers``
  again: the run trains at the suggested rate with its full schedule. Parts with their own rate
  (``learning_rates``) keep it.
* **The record.** ``lr_finder.json`` beside ``config.yaml`` (which keeps the configured rate: it is
  what was asked) holds the chosen and the configured rate and the curve; ``plots/lr_finder.png`` the
  curve with the suggestion marked; the loggers get ``lr_finder/lr`` in their hyperparameters, and
  ``metrics.json`` the record under ``lr_finder`` (``clipft.evaluation.artefacts``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateFinder as _LightningLearningRateFinder

from clipft.errors import ConfigError

log = logging.getLogger(__name__)

RECORD_FILE = "lr_finder.json"
PLOT_FILE = "plots/lr_finder.png"
# Lightning's suggestion skips the first 10 and the last point and needs 2 more
MIN_POINTS = 13


class LearningRateFinder(_LightningLearningRateFinder):
    def __init__(self, *args: Any, plot: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plot = plot
        self.record: dict[str, Any] | None = None  # what lr_finder.json holds, once the search ran

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:  # Lightning skips the search (with a warning): nothing to record
            return
        before = getattr(pl_module, "lr", None)
        loop = trainer.fit_loop
        max_epochs = loop.max_epochs
        loop.max_epochs = -1  # the search counts its own steps (fit_loop.epoch_loop.max_steps)
        try:
            super().on_fit_start(trainer, pl_module)
        finally:
            loop.max_epochs = max_epochs
        after = getattr(pl_module, "lr", None)
        self.record = search_record(self.optimal_lr, before, self._num_training_steps, self._early_stop_threshold)
        self.record.update(min_lr=self._min_lr, max_lr=self._max_lr, mode=self._mode)
        if trainer.is_global_zero:
            self._write(trainer)
        check_search(self.record)  # after the files: the refused curve can still be looked at
        if after != before:
            trainer.strategy.setup_optimizers(trainer)
        for logger in trainer.loggers:
            logger.log_hyperparams({"lr_finder/lr": self.record["lr"], "lr_finder/configured_lr": before})

    def _write(self, trainer: L.Trainer) -> None:
        from clipft.utils.io import atomic_write_json

        out = Path(trainer.default_root_dir)
        if self.plot and self.optimal_lr is not None and self.record.get("steps"):
            try:
                plot_lr_finder(self.record, out / PLOT_FILE)
                self.record["plot"] = PLOT_FILE
            except Exception as exc:  # noqa: BLE001 - a figure must not cost the run
                log.warning("could not draw the learning-rate search: %s: %s", type(exc).__name__, exc)
        atomic_write_json(out / RECORD_FILE, self.record)
        log.info("learning-rate search: lr=%s (configured %s), written to %s", self.record["lr"],
                 self.record["configured_lr"], out / RECORD_FILE)


def search_record(finder: Any, configured: Any, asked: int, threshold: float | None) -> dict[str, Any]:
    """The search as plain numbers: chosen rate, steps run of asked, how it stopped, the curve."""
    results = getattr(finder, "results", None) or {}
    lrs = [float(x) for x in results.get("lr", [])]
    losses = [float(x) for x in results.get("loss", [])]
    suggestion = finder.suggestion() if finder is not None and len(losses) >= MIN_POINTS else None
    finite_before = [x for x in losses[:-1] if math.isfinite(x)]
    diverged = bool(
        threshold is not None and len(losses) > 2 and finite_before
        and (not math.isfinite(losses[-1]) or losses[-1] > threshold * min(finite_before))
    )
    stopped = "completed" if len(lrs) >= asked else ("diverged" if diverged else "ended early")
    return {
        "lr": float(suggestion) if suggestion is not None else None,
        "configured_lr": float(configured) if isinstance(configured, (int, float)) else configured,
        "steps": len(lrs),
        "num_training_steps": asked,
        "stopped": stopped,
        "stopped_at_lr": lrs[-1] if lrs else None,
        "curve": {"lr": lrs, "loss": [x if math.isfinite(x) else None for x in losses]},
    }


def check_search(record: dict[str, Any]) -> None:
    """Refuse (one line) a search that cannot be trusted, instead of training at whatever it set."""
    steps, asked, at = record["steps"], record["num_training_steps"], record.get("stopped_at_lr")
    where = f"after {steps} of {asked} steps" + (f" (lr reached {at:.3g})" if at is not None else "")
    if record["stopped"] == "ended early":
        raise ConfigError(
            f"the learning-rate search ended {where} without the loss diverging: it ran out of training steps "
            "(empty train loader, trainer.max_steps/max_time?); lower callbacks.lr_finder.num_training_steps "
            "or give it more data"
        )
    if steps < max(MIN_POINTS, asked // 4) or record["lr"] is None:
        raise ConfigError(
            f"the learning-rate search stopped {where}, too early to suggest a rate (the loss "
            f"{'diverged' if record['stopped'] == 'diverged' else 'gave too few points'}): raise "
            "callbacks.lr_finder.early_stop_threshold (or null), lower callbacks.lr_finder.min_lr, or set "
            "model.optimizer.lr yourself without the lr_finder callback"
        )


def plot_lr_finder(record: dict[str, Any], path: str | Path) -> Path:
    """The learning-rate search (``clipft.callbacks.lr_finder``): smoothed loss against the rate, the
    chosen rate marked and the configured one drawn for comparison."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's) is left alone

    curve = record.get("curve") or {}
    pts = [(lr, loss) for lr, loss in zip(curve.get("lr", []), curve.get("loss", [])) if loss is not None]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, "-", lw=1.5, label="smoothed training loss")
    if record.get("mode", "exponential") == "exponential":
        ax.set_xscale("log")
    chosen, configured = record.get("lr"), record.get("configured_lr")
    if chosen is not None:
        ax.axvline(chosen, color="red", ls="--", lw=1, label=f"chosen lr {chosen:.3g}")
    if isinstance(configured, (int, float)):
        ax.axvline(configured, color="grey", ls=":", lw=1, label=f"configured lr {configured:.3g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title(f"Learning-rate search ({record.get('steps')} of {record.get('num_training_steps')} steps, "
                 f"{record.get('stopped')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
