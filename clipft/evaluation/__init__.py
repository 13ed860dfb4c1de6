"""What a run reports: metrics from predictions, calibration, and the files written to the run directory.

Plots, Grad-CAM and W&B helpers live in their own submodules (imported on use: matplotlib and
grad-cam are only loaded when a figure is drawn).
"""

from clipft.evaluation.artefacts import write_run_artefacts
from clipft.evaluation.calibration import apply_temperature, calibration_report, fit_temperature
from clipft.evaluation.metrics import classification_report

__all__ = ["apply_temperature", "calibration_report", "classification_report", "fit_temperature", "write_run_artefacts"]
