"""Crafted files, tampered runs and odd folders (docs/reliability.md, "Hostile files").

Every loader and CLI is fed checkpoints that try to run code; each must refuse with one line and
leave no marker file behind. Resumes must never mix two experiments or lose history, a kill
inside a checkpoint write leaves a loadable checkpoint, and valid-but-odd input gets a clear error.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose, run_script
from eval_helpers import colour_run_overrides, make_colour_dataset

from clipft.cli import ask, predict
from clipft.errors import CheckpointError, ConfigError, DataError, DiskFull
from clipft.methods.loading import load_module
from clipft.utils.checkpoint_io import read_checkpoint
from clipft.utils.safe_targets import UntrustedCheckpointError


class _Payload:
    """Unpickling this runs ``touch MARKER`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_module_ckpt(path: Path, marker: Path) -> Path:
    """weights_only-safe bytes that name ``os.system`` as the module to build."""
    torch.save({"clipft": {"module": "os.system"}, "hyper_parameters": {"command": f"touch {marker}"}, "state_dict": {}}, path)
    return path


def evil_target_ckpt(real: Path, path: Path, marker: Path) -> Path:
    """A real clipft checkpoint whose backbone ``_target_`` is ``os.system``."""
    ckpt = torch.load(real, weights_only=True)
    ckpt["hyper_parameters"]["clip"] = {"_target_": "os.system", "command": f"touch {marker}"}
    torch.save(ckpt, path)
    return path


def pickle_ckpt(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, path)
    return path


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ loading runs no code
def test_checkpoint_naming_os_system_is_refused_by_every_loader(colour_run, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = evil_module_ckpt(tmp_path / "evil.ckpt", marker)
    image = colour_run["data"] / "test" / "red" / "000.png"
    with pytest.raises(UntrustedCheckpointError, match="os.system.*not one of clipft's LightningModules"):
        load_module(evil)
    assert predict.main(["--ckpt", str(evil), str(image)]) == 1
    err = capsys.readouterr().err
    assert "os.system" in err and "--trust-checkpoint" in err and "Traceback" not in err
    assert ask.main(["--ckpt", str(evil), "--image", str(image), "red", "blue"]) == 1
    assert "os.system" in capsys.readouterr().err
    assert not marker.exists()


def test_real_module_with_an_os_system_backbone_target_is_refused(colour_run, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = evil_target_ckpt(colour_run["ckpt"], tmp_path / "evil.ckpt", marker)
    with pytest.raises(UntrustedCheckpointError, match=r"names 'os.system' at hyper_parameters.clip._target_"):
        load_module(evil)
    image = colour_run["data"] / "test" / "red" / "000.png"
    assert predict.main(["--ckpt", str(evil), str(image)]) == 1
    assert "os.system" in capsys.readouterr().err
    assert not marker.exists()


def test_eval_script_refuses_a_crafted_checkpoint(colour_run, tmp_path):
    marker = tmp_path / "PWNED"
    evil = evil_target_ckpt(colour_run["ckpt"], tmp_path / "evil.ckpt", marker)
    data = colour_run["data"]
    result = run_script(
        "eval.py",
        ["data=folder", f"data.root={data / 'train'}", f"data.test_root={data / 'test'}", "data.num_workers=0",
         f"ckpt_path={evil}", f"hydra.run.dir={tmp_path / 'eval'}"],
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "os.system" in result.stderr and "trust_checkpoint=true" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_trust_checkpoint_opt_in_builds_what_the_file_names(tmp_path):
    """The documented escape hatch really lifts the registry (here: the file's command runs)."""
    marker = tmp_path / "RAN"
    evil = evil_module_ckpt(tmp_path / "evil.ckpt", marker)
    with pytest.raises(Exception):  # os.system returns an int, which has no load_state_dict
        load_module(evil, trust_checkpoint=True)
    assert marker.exists()


def test_arguments_that_do_not_fit_the_class_are_refused_before_building(colour_run, tmp_path):
    ckpt = torch.load(colour_run["ckpt"], weights_only=True)
    ckpt["hyper_parameters"]["no_such_argument"] = 1
    torch.save(ckpt, tmp_path / "odd.ckpt")
    with pytest.raises(UntrustedCheckpointError, match="do not fit ContrastiveFineTune"):
        load_module(tmp_path / "odd.ckpt")
    ckpt["hyper_parameters"].pop("no_such_argument")
    ckpt["hyper_parameters"]["optimizer"]["_target_"] = "subprocess.run"
    torch.save(ckpt, tmp_path / "optim.ckpt")
    with pytest.raises(UntrustedCheckpointError, match="subprocess.run"):
        load_module(tmp_path / "optim.ckpt")


def test_a_registered_extension_loads_without_trust(colour_run, tmp_path):
    from clipft.utils import safe_targets

    ckpt = torch.load(colour_run["ckpt"], weights_only=True)
    ckpt["hyper_parameters"]["optimizer"]["_target_"] = "tests_only.MyOptimizer"
    torch.save(ckpt, tmp_path / "ext.ckpt")
    with pytest.raises(UntrustedCheckpointError):
        load_module(tmp_path / "ext.ckpt")
    safe_targets.register_safe_target("tests_only.MyOptimizer")
    try:
        with pytest.raises(Exception) as info:  # the name is allowed now, so the failure is the import
            load_module(tmp_path / "ext.ckpt")
        assert not isinstance(info.value, UntrustedCheckpointError)
    finally:
        safe_targets.SAFE_TARGETS.discard("tests_only.MyOptimizer")


def test_pickle_payload_is_refused_with_the_blocked_global(tmp_path):
    marker = tmp_path / "PWNED"
    path = pickle_ckpt(tmp_path / "pickle.ckpt", marker)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "GLOBAL" in message and "system" in message and "truncated" not in message
    assert not marker.exists()


def test_checkpoint_io_never_unpickles_even_when_asked(tmp_path):
    from clipft.utils.checkpoint_io import AtomicCheckpointIO

    marker = tmp_path / "PWNED"
    path = pickle_ckpt(tmp_path / "pickle.ckpt", marker)
    with pytest.raises(CheckpointError):
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    assert not marker.exists()


def test_python_package_paths_never_import_a_parent_package():
    from clipft.models.towers import resolve_package_path

    with pytest.raises(ConfigError, match="top-level package name"):
        resolve_package_path("python-package:os.path/x")


# ------------------------------------------------------------------------------------ resume safety
def copy_run(colour_run, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(colour_run["run_dir"], run)
    (run / ".clipft-run.json").unlink(missing_ok=True)
    return run


def test_safe_model_checkpoint_drops_restored_paths_outside_its_folder(tmp_path):
    from clipft.callbacks import SafeModelCheckpoint

    cb = SafeModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val/acc")
    outside, inside = str(tmp_path / "evil.ckpt"), str(tmp_path / "ckpts" / "best.ckpt")
    cb.load_state_dict({"dirpath": cb.dirpath, "best_model_path": outside, "best_model_score": torch.tensor(1.0),
                        "kth_best_model_path": outside, "kth_value": torch.tensor(1.0),
                        "best_k_models": {outside: torch.tensor(1.0), inside: torch.tensor(0.5)}, "last_model_path": outside})
    assert cb.best_model_path == "" and cb.last_model_path == "" and cb.kth_best_model_path == ""
    assert list(cb.best_k_models) == [inside]
    cb.load_state_dict({"dirpath": cb.dirpath, "best_model_path": inside, "best_model_score": torch.tensor(1.0)})
    assert cb.best_model_path == inside


def test_resume_from_a_tampered_last_checkpoint_never_loads_the_outside_file(colour_run, tmp_path):
    """last.ckpt's ModelCheckpoint state points best_model_path at a pickle payload outside the run."""
    marker = tmp_path / "PWNED"
    evil = pickle_ckpt(tmp_path / "evil.ckpt", marker)
    run = copy_run(colour_run, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    for key, state in ckpt["callbacks"].items():
        if "ModelCheckpoint" in key and "best_model_path" in state:
            state["best_model_path"] = str(evil)
            state["best_model_score"] = torch.tensor(-1e9)  # "unbeatable" for mode=min
            state["best_k_models"] = {str(evil): torch.tensor(-1e9)}
            state["dirpath"] = str(run / "checkpoints")
    torch.save(ckpt, last)
    result = run_script("train.py", [*colour_run_overrides(colour_run["data"]), "trainer.max_epochs=4", f"ckpt_path={last}",
                                     f"hydra.run.dir={tmp_path / 'resume'}"], cwd=tmp_path)
    assert not marker.exists()
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert Path(metrics["best_checkpoint"]).parent == run / "checkpoints"


def test_resume_with_other_classes_is_refused_and_the_old_run_is_untouched(colour_run, tmp_path):
    run = copy_run(colour_run, tmp_path)
    before = tree_digest(run)
    other = make_colour_dataset(tmp_path / "other")
    shutil.rmtree(other / "train" / "blue")
    shutil.rmtree(other / "test" / "blue")
    result = run_script("train.py", [*colour_run_overrides(other), "trainer.max_epochs=4",
                                     f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'resume'}"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "trains something else" in result.stderr and "data.root" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree_digest(run) == before  # config.yaml, metrics.json, checkpoints: byte for byte


def test_resume_with_the_same_root_but_other_classes_names_the_classes(colour_run, tmp_path):
    from omegaconf import OmegaConf

    from clipft.pipeline.run_dir import RunDir, check_resumable

    cfg = OmegaConf.create({"model": {"_target_": "clipft.methods.ContrastiveFineTune"}})
    run = RunDir(colour_run["run_dir"], resume_from=colour_run["ckpt"], resumed_classes=check_resumable(colour_run["ckpt"], cfg))
    run.check_classes(["blue", "green", "red"])
    with pytest.raises(CheckpointError, match=r"other classes.*3 classes -> 2.*not in the data: \['red'\]"):
        run.check_classes(["blue", "green"])


def test_history_after_a_resume_holds_every_epoch(colour_run, tmp_path):
    run = copy_run(colour_run, tmp_path)
    first = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in first["history"]] == [0, 1, 2]
    result = run_script("train.py", [*colour_run_overrides(colour_run["data"]), "trainer.max_epochs=5",
                                     f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'resume'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4]
    assert history[0]["val/loss"] == first["history"][0]["val/loss"]  # the earlier epochs' own values
    assert (run / "plots" / "training_curves.png").is_file()


def test_epoch_history_merges_the_parts_of_a_resumed_log(tmp_path):
    from clipft.evaluation.history import read_epoch_history

    header = "epoch,step,train/loss_epoch,val/acc\n"
    (tmp_path / "metrics.part1.csv").write_text(header + "0,4,1.0,0.5\n1,8,0.8,0.6\n2,9,,\n")  # killed inside epoch 2
    (tmp_path / "metrics.csv").write_text(header + "2,12,0.6,0.7\n3,16,0.5,0.8\n")
    history = read_epoch_history(tmp_path / "metrics.csv")
    assert [(h["epoch"], h.get("val/acc")) for h in history] == [(0, 0.5), (1, 0.6), (2, 0.7), (3, 0.8)]


def test_a_second_run_on_a_busy_run_dir_writes_nothing_into_it(tmp_path):
    run_dir = tmp_path / "shared"
    run_dir.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        import socket

        (run_dir / ".clipft-run.json").write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname(), "task": "train"}))
        before = tree_digest(run_dir)
        result = run_script("train.py", ["trainer.max_epochs=1", f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=120)
        assert result.returncode == 1
        assert "in use by another run" in result.stderr and "Traceback" not in result.stderr
        assert tree_digest(run_dir) == before  # no .hydra/, no train.log, no error line
    finally:
        owner.kill()
        owner.wait()


def test_a_kill_inside_a_checkpoint_write_leaves_a_loadable_last_and_the_temp_file_is_cleaned(tmp_path):
    env_path = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    data = make_colour_dataset(tmp_path / "colours", train_per_class=8, test_per_class=2)
    args = [*colour_run_overrides(data), "trainer.max_epochs=3", "run_name=job"]
    env = dict(os.environ, PYTHONPATH=env_path, CLIPFT_ROOT=str(tmp_path))
    killed = subprocess.run([sys.executable, str(ROOT / "train.py"), *args,
                             "+callbacks.fault._target_=reliability_faults.KillInCheckpointWrite", "+callbacks.fault.epoch=1"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run,) = [p for p in (tmp_path / "outputs" / "job").iterdir() if (p / "checkpoints").is_dir()]
    temps = list((run / "checkpoints").glob(".*.tmp"))
    assert temps and temps[0].stat().st_size > 100_000  # a whole checkpoint's bytes, never renamed
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    resumed = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, "ckpt_path=last"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2


# ------------------------------------------------------------------------------------ valid but odd input
def test_empty_validation_split_is_refused_up_front(tmp_path):
    data = make_colour_dataset(tmp_path / "colours", train_per_class=6, test_per_class=2)
    result = run_script("train.py", [*colour_run_overrides(data), "data.val_fraction=0", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 1
    assert "validation split is empty" in result.stderr and "data.val_fraction=0.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("size", [0, -5])
def test_non_positive_image_sizes_are_refused(size, tmp_path):
    from clipft.data import FolderDataModule
    from clipft.pipeline.validation import validate_config

    with pytest.raises(ConfigError, match=rf"data.image_size={size}"):
        validate_config(compose([f"data.image_size={size}"], root=tmp_path))
    with pytest.raises(ConfigError, match=rf"model.image_size={size}"):
        validate_config(compose(["model=cnn_transfer", f"model.image_size={size}"], root=tmp_path))
    with pytest.raises(ConfigError, match="image_size"):
        FolderDataModule(root=str(tmp_path), image_size=size)


def test_a_folder_dataset_refuses_symlinks_out_of_its_root(tmp_path):
    from clipft.data.folder import scan_class_folders

    data = make_colour_dataset(tmp_path / "colours", train_per_class=2, test_per_class=1)
    outside = tmp_path / "secret.png"
    shutil.copy(data / "train" / "red" / "000.png", outside)
    os.symlink(outside, data / "train" / "red" / "link.png")
    with pytest.raises(DataError, match="symlink.*outside the dataset root.*data.follow_symlinks=true"):
        scan_class_folders(data / "train")
    _, samples = scan_class_folders(data / "train", follow_symlinks=True)
    assert str(data / "train" / "red" / "link.png") in {s.path for s in samples}
    (data / "train" / "red" / "link.png").unlink()
    os.symlink(data / "train" / "green", data / "train" / "red" / "inside")  # inside the root: fine
    _, samples = scan_class_folders(data / "train", follow_symlinks=False)
    assert str(data / "train" / "red" / "inside" / "000.png") in {s.path for s in samples}


def test_unreadable_folders_are_reported_not_dropped(tmp_path, monkeypatch):
    from clipft.data.folder import scan_class_folders

    data = make_colour_dataset(tmp_path / "colours", train_per_class=2, test_per_class=1)
    sub = data / "train" / "red" / "more"
    sub.mkdir()
    shutil.copy(data / "train" / "red" / "000.png", sub / "x.png")
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) in (sub, data / "train" / "blue"):  # as if chmod 000 (tests may run as root)
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=r"'.*/blue' cannot be read \(Permission denied\)"):
        scan_class_folders(data / "train")
    with pytest.raises(DataError, match=r"more' cannot be read \(Permission denied\).*chmod"):
        scan_class_folders(data / "train", class_names=["green", "red"])


def test_disk_full_is_one_line_naming_the_folder_and_bytes(tmp_path, monkeypatch):
    import clipft.utils.io as io

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(DiskFull, match=rf"{tmp_path}.*2\.0 MB.*free.*paths.log_dir"):
        io.atomic_write_bytes(tmp_path / "last.ckpt", b"x" * 2_000_000)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_cpu_out_of_memory_names_batch_size_and_workers(tmp_path):
    from clipft.pipeline.failures import OutOfMemory, explain_failure

    cfg = compose(["data.batch_size=256", "data.num_workers=4"], root=tmp_path)
    exc = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes.")
    error = explain_failure(exc, cfg)
    assert isinstance(error, OutOfMemory)
    assert "host (CPU) memory" in str(error) and "data.batch_size=128" in str(error) and "data.num_workers" in str(error)
    enospc = explain_failure(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.ckpt")), cfg)
    assert isinstance(enospc, DiskFull) and str(tmp_path) in str(enospc)


def test_cli_bad_images_can_be_skipped_and_bad_options_are_one_line(colour_run, tmp_path, capsys):
    folder = tmp_path / "imgs"
    shutil.copytree(colour_run["data"] / "test" / "red", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    ckpt = str(colour_run["ckpt"])
    assert predict.main(["--ckpt", ckpt, str(folder)]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "--on-bad-image skip" in err and "Traceback" not in err
    assert predict.main(["--ckpt", ckpt, "--json", "--on-bad-image", "skip", str(folder)]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 6 and all(r["label"] == "red" for r in records)
    assert "skipped" in err and "broken.png" in err
    assert ask.main(["--ckpt", ckpt, "--json", "--on-bad-image", "skip", "--images", str(folder), "red"]) == 0
    assert "broken.png" not in capsys.readouterr().out
    for bad in ("0", "-1"):
        assert predict.main(["--ckpt", ckpt, "--batch-size", bad, str(folder)]) == 1
        assert "--batch-size must be at least 1" in capsys.readouterr().err
    assert predict.main(["--ckpt", ckpt, "--device", "gpu9", str(folder)]) == 1
    assert "not a device name" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert predict.main(["--ckpt", ckpt, "--device", "cuda", str(folder)]) == 1
        err = capsys.readouterr().err
        assert "no CUDA GPU" in err and "Traceback" not in err


def test_reliability_doc_lists_every_hostile_case():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    for phrase in ("trust_checkpoint", "--trust-checkpoint", "weights_only", "best_model_path", "follow_symlinks",
                   "--on-bad-image", "val_fraction", "image_size", "No space left", "DefaultCPUAllocator", ".tmp",
                   "hydra.run.dir"):
        assert phrase in doc, phrase
