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
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clipft.errors import CheckpointError, ConfigError
from clipft.modules.loading import read_checkpoint
from clipft.pipeline.launch import is_global_zero_process
from clipft.utils.io import append_json_line, atomic_write_json

log = logging.getLogger(__name__)

CLAIM_NAME = ".clipft-run.json"
LAST_NAME = "last.ckpt"
RESUME_KEYWORDS = ("last", "latest")


def prepare_run_dir(cfg: DictConfig, task: str = "train") -> Path:
    """Resolve ``ckpt_path`` for a resumed training run (pointing ``paths.output_dir`` at the run it
    continues), then claim the output directory; returns it."""
    resume_from = resolve_resume(cfg) if task == "train" else None
    output_dir = Path(cfg.paths.output_dir)
    if resume_from is not None:
        OmegaConf.update(cfg, "ckpt_path", str(resume_from), merge=False)
        original = run_dir_of(resume_from)
        if original is not None and original.resolve() != output_dir.resolve():
            record = {"continues": str(original), "ckpt_path": str(resume_from), "time": time.time()}
            atomic_write_json(output_dir / "resumed.json", record)
            append_json_line(original / "resumes.jsonl", {**record, "log_dir": str(output_dir)})
            OmegaConf.update(cfg, "paths.output_dir", str(original), merge=False)
            output_dir = original
            keep_csv_history(original)
        log.info("resuming from %s; writing into %s", resume_from, output_dir)
    claim_run_dir(output_dir, task, takeover=resume_from is not None)
    return output_dir


# ---------------------------------------------------------------------------------------- resume
def resolve_resume(cfg: DictConfig) -> Path | None:
    """The checkpoint ``ckpt_path`` means (``last``, a run dir or a file), checked loadable and of the right kind."""
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
    check_resumable(path, cfg)
    return path


def find_last_checkpoint(runs_dir: Path) -> Path | None:
    """The most recently written ``<runs_dir>/*/checkpoints/last.ckpt``."""
    found = [p for p in runs_dir.glob(f"*/checkpoints/{LAST_NAME}") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def check_resumable(path: Path, cfg: DictConfig) -> None:
    """Loads with ``weights_only=True``, holds training state, and was trained by the configured module."""
    ckpt = read_checkpoint(path)
    if "loops" not in ckpt or "optimizer_states" not in ckpt:
        raise CheckpointError(
            f"{str(path)!r} holds weights only, no training state to resume; use init_from={str(path)!r} "
            "to start a new run from its weights"
        )
    recorded = str((ckpt.get("clipft") or {}).get("module", ""))
    target = str(OmegaConf.select(cfg, "model._target_", default="") or "")
    if recorded and target and recorded.rsplit(".", 1)[-1] != target.rsplit(".", 1)[-1]:
        raise CheckpointError(
            f"{str(path)!r} was trained by {recorded}, but model._target_={target}; resume with the same "
            "model config (model=...) or use init_from for a new run"
        )


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
    output_dir.mkdir(parents=True, exist_ok=True)
    marker = output_dir / CLAIM_NAME
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "task": task, "started": time.time()}
    try:
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

