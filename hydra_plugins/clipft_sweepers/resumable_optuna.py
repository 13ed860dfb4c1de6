"""The Optuna sweeper whose ``n_trials`` counts the whole stored study (see :mod:`clipft.pipeline.optuna_resume`)."""

from __future__ import annotations

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

from clipft.pipeline.optuna_resume import resume_study
from clipft.utils.quiet_logs import quiet_library_logs


class ResumableOptunaSweeper(OptunaSweeper):
    """:class:`OptunaSweeper` that continues a stored study: a rerun runs only the trials still to go."""

    def sweep(self, arguments: list[str]) -> None:
        quiet_library_logs()  # alembic's "Context impl SQLiteImpl" lines when the SQLite study opens
        resume_study(self.sweeper)
        return super().sweep(arguments)
