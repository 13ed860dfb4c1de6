"""What a run reports: metrics from predictions, and the files written to the run directory."""

from clipft.evaluation.metrics import classification_report

__all__ = ["classification_report"]
