"""Optuna sweeps that resume: the study in an SQLite file, ``n_trials`` counted over the whole study.

hydra-optuna-sweeper runs ``n_trials`` new trials per invocation and keeps the study in memory
unless told otherwise. ``hparams_search=optuna_lr`` stores it in
``<CLIPFT_ROOT or .>/multirun/optuna/<study_name>.db``. The sweeper ``hydra_plugins.clipft_sweepers.resumable_optuna.ResumableOptunaSweeper``
(Hydra loads sweepers only from its plugin namespace) makes a rerun of the same
command continue the study: trials that ended (complete, pruned or failed) count towards
``n_trials``, and a trial whose process was killed (left ``RUNNING``) is asked again. Needs
SQLAlchemy < 2 with optuna 2.10 (the ``sweeps`` extra pins it; with SQLAlchemy 2, optuna 2.10's
storage fails with an ``AssertionError``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
ENDED = ("COMPLETE", "PRUNED", "FAIL")


def sqlite_file(storage: Any) -> Path | None:
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        return Path(storage[len("sqlite:///"):])
    return None


def ended_trials(study_name: str | None, storage: Any) -> int:
    """Trials of the stored study that ended; 0 when there is no such study yet."""
    import optuna

    if storage is None or study_name is None:
        return 0
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # optuna's "study not found"
        return 0
    return sum(trial.state.name in ENDED for trial in study.get_trials(deepcopy=False))


def resume_study(impl: Any) -> None:
    """Make sure the SQLite folder exists and lower ``impl.n_trials`` by the trials that already ended."""
    path = sqlite_file(impl.storage)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    done = ended_trials(impl.study_name, impl.storage)
    if done:
        remaining = max(0, int(impl.n_trials) - done)
        log.info("study %r in %s: %d trials already ended, %d to go of n_trials=%d",
                 impl.study_name, impl.storage, done, remaining, impl.n_trials)
        impl.n_trials = remaining


def storage_error_line(storage: Any, exc: BaseException) -> str | None:
    """One line for a study file that cannot be used (corrupted, locked, not SQLite); None: another error."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    modules = {cls.__module__.split(".")[0] for cls in type(exc).__mro__}
    if not ({"sqlalchemy", "sqlite3"} & modules or "StorageInternalError" in names or "DatabaseError" in names):
        return None
    path = sqlite_file(storage)
    where = repr(str(path)) if path is not None else repr(str(storage))
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:160]
    return (
        f"the Optuna study storage {where} cannot be used ({type(exc).__name__}: {reason}); if another sweep holds it, "
        "wait for it; if the file is damaged, move it away (the study restarts) or set "
        "hydra.sweeper.storage=sqlite:///NEW.db / hydra.sweeper.study_name=NEW"
    )
