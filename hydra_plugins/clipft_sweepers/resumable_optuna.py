"""The Optuna sweeper whose ``n_trials`` counts the whole stored study and whose reruns repeat no
trial (see :mod:`clipft.pipeline.optuna_resume`)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

from clipft.pipeline.optuna_resume import OWNER, _load, owner_tag, resume_study, storage_error_line
from clipft.utils.quiet_logs import quiet_library_logs


class ResumableOptunaSweeper(OptunaSweeper):
    """:class:`OptunaSweeper` that continues a stored study: a rerun runs only the trials still to go."""

    def sweep(self, arguments: list[str]) -> None:
        quiet_library_logs()  # alembic's "Context impl SQLiteImpl" lines when the SQLite study opens
        self._tag_trials_with_owner()
        try:
            resume_study(self.sweeper)
            left = grid_cells_left(self.sweeper, list(arguments))
            if left is not None:  # a grid: its cells still to run, whatever n_trials says
                self.sweeper.n_trials = min(int(self.sweeper.n_trials), left)
            # a study already complete launches no job, so nothing makes the sweep folder its results go to
            sweep_dir = getattr(getattr(getattr(self.sweeper, "config", None), "hydra", None), "sweep", None)
            if sweep_dir is not None:
                Path(str(sweep_dir.dir)).mkdir(parents=True, exist_ok=True)
            return super().sweep(arguments)
        except Exception as exc:  # a damaged or locked study file: one line naming it, not an 80-line trace
            line = storage_error_line(self.sweeper.storage, exc)
            if line is None:
                raise
            print(f"clipft error: {line}", file=sys.stderr)
            raise SystemExit(1) from None

    def _tag_trials_with_owner(self) -> None:
        """Each asked trial records this process: a rerun tells a killed sweep's trial from a live one's."""
        impl = self.sweeper
        if getattr(impl, "_clipft_owner_tagging", False):
            return
        configure = impl._configure_trials

        def configure_trials(trials: list[Any], *args: Any, **kwargs: Any):
            owner = owner_tag()
            for trial in trials:
                trial.set_system_attr(OWNER, owner)
            return configure(trials, *args, **kwargs)

        impl._configure_trials = configure_trials
        impl._clipft_owner_tagging = True


def grid_cells_left(impl: Any, arguments: list[str]) -> int | None:
    """For a GridSampler sweep: the cells of its grid that no ended trial of the stored study ran; else None.

    The grid is the one hydra-optuna-sweeper builds (``hydra.sweeper.params`` and the command line's sweeps)."""
    if not (isinstance(impl.sampler, functools.partial) and impl.sampler.func is optuna.samplers.GridSampler):
        return None
    impl._process_searchspace_config()
    distributions = dict(impl.search_space_distributions or {})
    distributions.update(create_params_from_overrides([*impl._parse_sweeper_params_config(), *arguments])[0])
    grid = optuna.samplers.GridSampler({name: impl._to_grid_sampler_choices(d) for name, d in distributions.items()})
    study = _load(impl.study_name, impl.storage)
    trials = study.get_trials(deepcopy=False) if study is not None else []
    ran = {t.system_attrs["grid_id"] for t in trials if t.state.is_finished() and "grid_id" in t.system_attrs
           and grid._same_search_space(t.system_attrs.get("search_space") or {})}
    return len(grid._all_grids) - len(ran)
