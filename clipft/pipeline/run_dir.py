"""Which directory a run writes to, and which checkpoint a resumed run continues from.

A fresh run owns the directory Hydra made for it (microseconds in its name) and claims it with a
marker file, so two live runs never write into one directory.

``ckpt_path=last`` finds the newest ``checkpoints/last.ckpt`` of the same ``run_name``; a run
directory or a checkpoint file may be given instead. A resumed run **continues in the original
run directory** (its checkpoints, CSV log and, at the end, ``metrics.json``): Lightning restores
the best-checkpoint bookkeeping (best score, top-k) only when the checkpoint folder is unchanged,
and that is what makes a resumed run end exactly like an uninterrupted one. The resuming call's
own Hydra directory keeps its log and a ``resumed.json`` pointing at the run it continued.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clipft.errors import CheckpointError, ConfigError
from clipft.methods.legacy import upgrade_checkpoint
from clipft.methods.loading import read_checkpoint
from clipft.pipeline.launch import is_global_zero_process
from clipft.utils.file_gate import gate_weights_checkpoint
from clipft.utils.io import append_json_line, atomic_write_json

log = logging.getLogger(__name__)

CLAIM_NAME = ".clipft-run.json"
LAST_NAME = "last.ckpt"
RESUME_KEYWORDS = ("last", "latest")


@dataclass
class RunDir:
    """Where a run writes (``path``) and, when it resumes, what it continues (``resume_from``) and where
    the resuming call's own Hydra directory is (``log_dir``)."""

    path: Path
    task: str = "train"
    resume_from: Path | None = None
    log_dir: Path | None = None
    # the class names recorded in ``resume_from`` (read once, by check_resumable)
    resumed_classes: list[str] | None = None
    begun: bool = False

    def check_classes(self, class_names: list[str]) -> None:
        """A resumed run's dataset has the classes its checkpoint was trained on."""
        if self.resume_from is not None:
            check_resumed_classes(self.resumed_classes, class_names, self.resume_from)

    def begin(self) -> RunDir:
        """Take the directory: claim it, note the resume, keep the old CSV log, clean up temp files.
        A resumed run calls this only after every check passed, so a refused resume changes nothing."""
        if self.begun:
            return self
        if self.resume_from is not None and self.log_dir is not None:
            record = {"continues": str(self.path), "ckpt_path": str(self.resume_from), "time": time.time()}
            atomic_write_json(self.log_dir / "resumed.json", record)
        claim_run_dir(self.path, self.task, takeover=self.resume_from is not None)
        if self.resume_from is not None and self.log_dir is not None and is_global_zero_process():
            append_json_line(self.path / "resumes.jsonl", {**record, "log_dir": str(self.log_dir)})
            keep_csv_history(self.path)
        if is_global_zero_process():
            remove_stale_temp_files(self.path)
        self.begun = True
        return self


def prepare_run_dir(cfg: DictConfig, task: str = "train") -> RunDir:
    """Resolve ``ckpt_path`` for a resumed training run (pointing ``paths.output_dir`` at the run it
    continues, after checking that it is the same experiment); a fresh run claims its directory at
    once, a resumed one when :meth:`RunDir.begin` is called after the remaining checks."""
    resume_from = locate_resume_checkpoint(cfg) if task == "train" else None
    output_dir = Path(cfg.paths.output_dir)
    run = RunDir(output_dir, task)
    if resume_from is None:
        return run.begin()
    run.resumed_classes = check_resumable(resume_from, cfg)
    OmegaConf.update(cfg, "ckpt_path", str(resume_from), merge=False)
    run.resume_from = resume_from
    original = run_dir_of(resume_from)
    if original is not None:
        check_same_experiment(original, cfg, resume_from)  # refuse before anything of the old run is touched
        if original.resolve() != output_dir.resolve():
            OmegaConf.update(cfg, "paths.output_dir", str(original), merge=False)
            run.path, run.log_dir = original, output_dir
    log.info("resuming from %s; writing into %s", resume_from, run.path)
    return run


# what must match between a run and the command that resumes it (dotted config keys)
SAME_EXPERIMENT_KEYS = (
    "data._target_",
    "data.root",
    "data.test_root",
    "data.train_list",
    "data.class_names_file",
    "model._target_",
    "model.clip._target_",
    "model.clip.name_or_path",
    "model.backbone.name",
)


def check_same_experiment(run_dir: Path, cfg: DictConfig, ckpt: Path) -> None:
    """The resuming config trains the same thing (data, classes source, model) as ``run_dir``'s
    ``config.yaml``; otherwise refuse, naming each key that differs."""
    import yaml

    recorded_file = run_dir / "config.yaml"
    try:
        recorded = yaml.safe_load(recorded_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"cannot read {str(recorded_file)!r} to check the resume ({exc}); resume with a checkpoint path outside that run") from None
    differs = []
    for key in SAME_EXPERIMENT_KEYS:
        old, new = _lookup(recorded, key), OmegaConf.select(cfg, key, default=None)
        if old is None and new is None:
            continue
        if comparable_value(old) != comparable_value(new):
            differs.append(f"{key}: {old!r} -> {new!r}")
    if differs:
        raise CheckpointError(
            f"ckpt_path={str(ckpt)!r} continues the run in {str(run_dir)!r}, but this command trains something else "
            f"({'; '.join(differs)}); resume with that run's settings, or start a new run (drop ckpt_path, or "
            "init_from=CKPT to start from its weights)"
        )


def check_resumed_classes(recorded: list[str] | None, class_names: list[str], ckpt: str | Path) -> None:
    """The dataset's classes (``class_names``) are those ``ckpt`` recorded (``recorded``; None: not recorded)."""
    if recorded is None or list(recorded) == list(class_names):
        return
    old, new = list(recorded), list(class_names)
    detail = f"{len(old)} classes -> {len(new)}"
    gone, added = [c for c in old if c not in new], [c for c in new if c not in old]
    if gone or added:
        detail += f" (not in the data: {gone[:5]}; new: {added[:5]})"
    else:
        detail += " (same names, other order)"
    raise CheckpointError(
        f"ckpt_path={str(ckpt)!r} was trained on other classes than this dataset: {detail}; resume with the "
        "run's own data, or start a new run"
    )


def _lookup(tree: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def comparable_value(value: Any) -> Any:
    """A config value as two runs' configs should be compared: paths resolved (one folder reached through a
    symlink, a worktree or a moved checkout is one folder); other values as they are."""
    if isinstance(value, str) and ("/" in value or value.startswith(".")):
        return os.path.realpath(os.path.expanduser(value))
    return value


def remove_stale_temp_files(output_dir: Path) -> list[Path]:
    """``checkpoints/.<name>.*.tmp`` left by a write that was killed (clipft.utils.io.atomic_write_bytes)."""
    removed = []
    for tmp in sorted((output_dir / "checkpoints").glob(".*.tmp")):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError as exc:
            log.warning("could not remove the stale temp file %s: %s", tmp, exc)
    if removed:
        log.info("removed %d temp file(s) of an interrupted checkpoint write in %s", len(removed), output_dir / "checkpoints")
    return removed


# ---------------------------------------------------------------------------------------- resume
def resolve_resume(cfg: DictConfig) -> Path | None:
    """The checkpoint ``ckpt_path`` means (``last``, a run dir or a file), checked loadable and of the right kind."""
    path = locate_resume_checkpoint(cfg)
    if path is not None:
        check_resumable(path, cfg)
    return path


def locate_resume_checkpoint(cfg: DictConfig) -> Path | None:
    """The checkpoint file ``ckpt_path`` means (``last``, a run dir or a file); not yet read."""
    raw = cfg.get("ckpt_path")
    if raw in (None, "", False):
        return None
    raw = str(raw)
    if raw.lower() in RESUME_KEYWORDS:
        log_dir = Path(str(cfg.paths.log_dir)) / str(cfg.get("run_name", ""))
        path = find_last_checkpoint(log_dir)
        if path is None:
            raise ConfigError(
                f"ckpt_path={raw}: no {LAST_NAME} under {str(log_dir)!r}/*/checkpoints/ (runs named "
                f"run_name={cfg.get('run_name')!r}); drop ckpt_path to start afresh, or pass a checkpoint file or run directory"
            )
    else:
        path = Path(raw).expanduser()
        if path.is_dir():
            candidates = [path / "checkpoints" / LAST_NAME, path / LAST_NAME]
            path = next((c for c in candidates if c.is_file()), None)
            if path is None:
                raise ConfigError(f"ckpt_path={raw!r} is a folder without checkpoints/{LAST_NAME}; pass a checkpoint file")
        elif not path.is_file():
            raise ConfigError(
                f"ckpt_path={raw!r} does not exist; pass a checkpoint file, a run directory, or ckpt_path=last"
            )
    return path


def find_last_checkpoint(runs_dir: Path) -> Path | None:
    """The most recently written ``<runs_dir>/*/checkpoints/last.ckpt``."""
    found = [p for p in runs_dir.glob(f"*/checkpoints/{LAST_NAME}") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def check_resumable(path: Path, cfg: DictConfig) -> list[str] | None:
    """Loads with ``weights_only=True``, holds training state, and was trained by the configured module;
    returns the class names it recorded (None if it recorded none)."""
    ckpt = read_checkpoint(path)
    if "loops" not in ckpt or "optimizer_states" not in ckpt:
        raise CheckpointError(
            f"{str(path)!r} holds weights only, no training state to resume; use init_from={str(path)!r} "
            "to start a new run from its weights"
        )
    gate_weights_checkpoint(ckpt, str(path), trust=bool(cfg.get("trust_checkpoint", False)))
    recorded = str((ckpt.get("clipft") or {}).get("module", ""))
    upgraded, _ = upgrade_checkpoint(recorded, dict(ckpt.get("hyper_parameters") or {}))  # clipft 0.1 names
    target = str(OmegaConf.select(cfg, "model._target_", default="") or "")
    if recorded and target and str(upgraded).rsplit(".", 1)[-1] != target.rsplit(".", 1)[-1]:
        raise CheckpointError(
            f"{str(path)!r} was trained by {recorded}, but model._target_={target}; resume with the same "
            "model config (model=...) or use init_from for a new run"
        )
    names = (ckpt.get("hyper_parameters") or {}).get("class_names")
    return list(names) if names is not None else None


def run_dir_of(ckpt: Path) -> Path | None:
    """``<run>/checkpoints/x.ckpt`` -> ``<run>`` when it is a clipft run directory."""
    ckpt = Path(ckpt)
    if ckpt.parent.name == "checkpoints" and (ckpt.parent.parent / "config.yaml").is_file():
        return ckpt.parent.parent
    return None


# ---------------------------------------------------------------------------------------- claim
def claim_run_dir(output_dir: Path, task: str = "train", takeover: bool = False) -> None:
    """Mark ``output_dir`` as this process's; refuse if another live process on this host holds it."""
    if not is_global_zero_process():
        return  # a DDP child rank: rank 0 owns the directory it shares (clipft.pipeline.launch)
    marker = output_dir / CLAIM_NAME
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "task": task, "started": time.time()}
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        owner = _read_claim(marker)
        if _is_alive_elsewhere(owner):
            raise ConfigError(
                f"run directory {str(output_dir)!r} is in use by another run (pid {owner.get('pid')} on "
                f"{owner.get('host')}); wait for it to finish, or set hydra.run.dir to a new folder"
            ) from None
        if owner and not takeover and owner.get("pid") != os.getpid():
            log.warning("run directory %s was used by an earlier run (pid %s); its files may be overwritten", output_dir, owner.get("pid"))
        atomic_write_json(marker, mine)
        return
    except OSError as exc:  # read-only, not a folder, permission denied: one line naming the folder
        raise ConfigError(
            f"run directory {str(output_dir)!r} cannot be written ({exc.strerror or exc}); set hydra.run.dir "
            "(or hydra.sweep.dir) to a folder you can write, or fix its permissions"
        ) from None
    with os.fdopen(fd, "w") as fh:
        json.dump(mine, fh)


def _read_claim(marker: Path) -> dict[str, Any]:
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}


def _is_alive_elsewhere(owner: dict[str, Any]) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _is_running(pid)


def _is_running(pid: int) -> bool:
    """A zombie (killed, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def keep_csv_history(run_dir: Path) -> None:
    """Lightning's CSVLogger starts ``metrics.csv`` afresh: keep the interrupted part as ``metrics.partN.csv``."""
    for csv in run_dir.glob("*/metrics.csv"):
        n = 1
        while (csv.parent / f"metrics.part{n}.csv").exists():
            n += 1
        csv.rename(csv.parent / f"metrics.part{n}.csv")

