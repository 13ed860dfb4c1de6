"""Optuna sweeps that resume: the study in an SQLite file, ``n_trials`` counted over the whole study.

hydra-optuna-sweeper runs ``n_trials`` new trials per invocation and keeps the study in memory
unless told otherwise. ``hparams_search=optuna_lr`` stores it in
``<CLIPFT_ROOT or .>/multirun/optuna/<study_name>.db``. The sweeper ``hydra_plugins.clipft_sweepers.resumable_optuna.ResumableOptunaSweeper``
(Hydra loads sweepers only from its plugin namespace) makes a rerun of the same command continue
the study, never repeating a trial:

* trials that ended (complete, pruned or failed) count towards ``n_trials``;
* a trial left ``RUNNING`` by a killed process is marked ``FAIL`` and asked again with its own
  parameters (``enqueue_trial``); it counts once, when the re-asked trial ends. The sweeper tags each
  trial it asks with ``clipft:owner`` (host and process id): a RUNNING trial of a live process on
  this host (another sweep on the same study) is left alone; one of another host is taken as dead;
* the sampler continues its sequence: a seeded sampler restarts from its seed in each process, so
  the trials already asked are replayed through it on a throwaway in-memory study (same history,
  same order), which leaves its random state where an uninterrupted sweep would have it. The next
  trial then gets the next start-up point, not trial 0's again.

Needs SQLAlchemy < 2 with optuna 2.10 (the ``sweeps`` extra pins it; with SQLAlchemy 2, optuna
2.10's storage fails with an ``AssertionError``).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
ENDED = ("COMPLETE", "PRUNED", "FAIL")
OWNER = "clipft:owner"  # system attr: "host:pid" of the sweep process that asked the trial
REQUEUED = "clipft:requeued"  # system attr on a killed trial: asked again (its FAIL does not count)


def sqlite_file(storage: Any) -> Path | None:
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        return Path(storage[len("sqlite:///"):])
    return None


def owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: Any) -> bool:
    """True only for a live process on this host other than this one."""
    if not isinstance(owner, str) or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _load(study_name: str | None, storage: Any):
    import optuna

    if storage is None or study_name is None:
        return None
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # optuna's "study not found"
        return None


def _counts(trial) -> bool:
    """Does this trial use up one of ``n_trials``?"""
    name = trial.state.name
    if name == "FAIL":
        return not trial.system_attrs.get(REQUEUED)
    return name in ENDED or (name == "RUNNING" and _owner_alive(trial.system_attrs.get(OWNER)))


def ended_trials(study_name: str | None, storage: Any) -> int:
    """Trials of the stored study that used up one of ``n_trials``; 0 when there is no such study yet."""
    study = _load(study_name, storage)
    if study is None:
        return 0
    return sum(_counts(trial) for trial in study.get_trials(deepcopy=False))


def requeue_dead_trials(study) -> list[int]:
    """Mark the RUNNING trials of dead processes FAIL and enqueue their parameters again; their numbers."""
    from optuna.trial import TrialState

    storage, requeued = study._storage, []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _owner_alive(trial.system_attrs.get(OWNER)):
            continue
        storage.set_trial_system_attr(trial._trial_id, REQUEUED, True)  # killed: it never uses up one of n_trials
        grid = "grid_id" in trial.system_attrs
        if grid:  # GridSampler: un-visit the cell; it draws it again (an enqueued trial would take another cell's id)
            storage.set_trial_system_attr(trial._trial_id, "search_space", {})
        storage.set_trial_state(trial._trial_id, TrialState.FAIL)
        if trial.params and not grid:  # killed before its parameters were drawn: nothing ran, nothing to ask again
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # enqueue_trial is "experimental" in optuna 2.x
                study.enqueue_trial(dict(trial.params))
        requeued.append(trial.number)
    return requeued


def replay_sampler(study, sampler: Any) -> bool:
    """Advance ``sampler`` past the trials ``study`` already asked of it; True when the draws matched.

    Each stored trial is asked again, in order, on an in-memory study through ``sampler``, with the
    same distributions in the same order, and told its stored result before the next trial that
    started after it ended: the sampler sees the history it saw then and draws what it drew then.
    Enqueued trials are re-enqueued (they draw nothing). A sampler that is not a sampler instance
    (the GridSampler partial) is left alone.
    """
    import optuna
    from optuna.trial import TrialState

    if not isinstance(sampler, optuna.samplers.BaseSampler):
        return True
    asked = sorted((t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING),
                   key=lambda t: t.number)
    if not asked:
        return True
    matched = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna_level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "Trial N finished" lines for replays
        try:
            shadow = optuna.create_study(sampler=sampler, directions=[d.name.lower() for d in study.directions])
            pending: list[tuple[Any, Any]] = []

            def tell(stored, replayed) -> None:
                for step, value in stored.intermediate_values.items():
                    replayed.report(value, step)
                if stored.state == TrialState.COMPLETE:
                    shadow.tell(replayed, values=stored.values)
                elif stored.state == TrialState.PRUNED:
                    shadow.tell(replayed, state=TrialState.PRUNED)
                else:
                    shadow.tell(replayed, state=TrialState.FAIL)

            for stored in asked:
                for done in [p for p in pending if _ended_before(p[0], stored)]:
                    tell(*done)
                    pending.remove(done)
                fixed = stored.system_attrs.get("fixed_params")
                if fixed is not None:
                    shadow.enqueue_trial(fixed)
                replayed = shadow.ask()
                for name, distribution in stored.distributions.items():
                    value = replayed._suggest(name, distribution)
                    old = stored.params[name]
                    same = (math.isclose(value, old, rel_tol=1e-12) if isinstance(value, float)
                            and isinstance(old, float) else value == old)
                    matched = matched and same
                pending.append((stored, replayed))
            for done in pending:
                if done[0].state.is_finished():
                    tell(*done)
        finally:
            optuna.logging.set_verbosity(optuna_level)
    return matched


def _ended_before(stored, later) -> bool:
    ended, started = stored.datetime_complete, later.datetime_start
    return ended is not None and (started is None or ended <= started)


def resume_study(impl: Any) -> None:
    """Before the sweep: make the SQLite folder, requeue killed trials, advance the sampler past the
    trials already asked and lower ``impl.n_trials`` by the trials that already ended."""
    path = sqlite_file(impl.storage)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    study = _load(impl.study_name, impl.storage)
    if study is None:
        return
    requeued = requeue_dead_trials(study)
    if requeued:
        log.info("study %r: trial(s) %s of a killed sweep marked FAIL and asked again with their parameters",
                 impl.study_name, ", ".join(map(str, requeued)))
    if not replay_sampler(study, impl.sampler):
        log.info("study %r: the sampler's draws differ from the stored trials (its seed, settings or the "
                 "search space changed); it continues past them all the same", impl.study_name)
    done = sum(_counts(trial) for trial in study.get_trials(deepcopy=False))
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
