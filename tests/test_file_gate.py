"""The one gate for configs that come from files (docs/reliability.md, "Threat model").

A rule keeps every path through it (no other module reads YAML into a builder or imports Hydra's
``instantiate``); a fuzz test writes hostile ``_target_``s at random depths into every kind of file
a user can be handed and drives each entry point that reads it: nothing of the file runs (no
marker file appears) and the answer is one line.
"""

from __future__ import annotations

import ast
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, run_script

from clipft.errors import ClipftError
from clipft.utils.file_gate import gate_file_config
from clipft.utils.safe_targets import UntrustedCheckpointError

CLIPFT = ROOT / "clipft"
# modules allowed to yaml.safe_load: each reads data that is displayed or compared, never built
YAML_READERS = {
    "clipft/utils/file_gate.py": "the gate's own reader",
    "clipft/prompts.py": "class descriptions: strings for prompts",
    "clipft/evaluation/concepts.py": "a concept map: class names",
    "clipft/results/records.py": "run configs shown in tables",
    "clipft/pipeline/run_dir.py": "a run's config compared on resume",
}


def _calls(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            names.append(f"{node.func.value.id}.{node.func.attr}")
    return names


def test_no_module_reads_a_config_file_past_the_gate():
    """OmegaConf.load (which would hand a file straight to instantiate) is used nowhere; yaml only where
    nothing is built from it; Hydra's instantiate only in the pipeline's builders."""
    offenders = []
    for file in sorted(CLIPFT.rglob("*.py")):
        rel = file.relative_to(ROOT).as_posix()
        tree = ast.parse(file.read_text())
        calls = _calls(tree)
        if "OmegaConf.load" in calls or "yaml.load" in calls or "yaml.unsafe_load" in calls:
            offenders.append(f"{rel}: loads YAML without the gate")
        if "yaml.safe_load" in calls and rel not in YAML_READERS:
            offenders.append(f"{rel}: yaml.safe_load outside the allowlisted readers")
        for node in ast.walk(tree):
            imports_instantiate = isinstance(node, ast.ImportFrom) and node.module == "hydra.utils" and any(a.name == "instantiate" for a in node.names)
            if imports_instantiate and rel != "clipft/pipeline/building.py":
                offenders.append(f"{rel}: imports hydra.utils.instantiate")
    assert not offenders, offenders


# ------------------------------------------------------------------------------------------ fuzzing
HOSTILE = ("builtins.open", "torch.load", "os.system", "subprocess.run", "importlib.import_module", "torch.optim.AdamW")


def hostile_node(rng: random.Random, marker: Path) -> dict:
    target = rng.choice(HOSTILE)
    key = rng.choice(("_target_", "_target_", "_args_"))
    if key == "_args_":
        return {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
    return {key: target, "file": str(marker), "mode": "w"}


def plant(config: dict, node: dict, rng: random.Random) -> str:
    """Put ``node`` at a random depth of ``config`` (a new key, inside a list or replacing a mapping)."""
    where, here = [], config
    for _ in range(rng.randint(0, 3)):
        keys = [k for k, v in here.items() if isinstance(v, dict) and not k.startswith("_")]
        if not keys:
            break
        key = rng.choice(keys)
        where.append(key)
        here = here[key]
    slot = rng.choice(("evil", "transform_options", "extra"))
    here[slot] = [node] if rng.random() < 0.3 else node
    return ".".join([*where, slot])


@pytest.mark.parametrize("kind", ["module", "datamodule", "plain"])
def test_the_gate_refuses_hostile_targets_at_any_depth(kind, tmp_path):
    rng = random.Random(f"gate-{kind}")
    base = {"_target_": "clipft.data.FolderDataModule", "root": "x", "batch_size": 4} if kind == "datamodule" else {"lr": 1, "clip": {"config": {"a": 1}}}
    for _ in range(40):
        config = json.loads(json.dumps(base))
        planted = plant(config, hostile_node(rng, tmp_path / "PWNED"), rng)
        with pytest.raises(UntrustedCheckpointError) as info:
            gate_file_config(config, "crafted.yaml", kind, root_targets={"clipft.data.FolderDataModule"})
        assert "\n" not in str(info.value), planted
    assert not (tmp_path / "PWNED").exists()


def test_sizes_and_remote_code_are_refused_in_every_kind(tmp_path):
    for kind in ("module", "plain"):
        with pytest.raises(ClipftError, match="bound of 4096"):
            gate_file_config({"clip": {"config": {"vision_config": {"image_size": 60000}}}}, "f", kind)
        with pytest.raises(ClipftError, match="billion weights"):
            gate_file_config({"text_config": {"hidden_size": 8192, "intermediate_size": 32768, "num_hidden_layers": 64}}, "f", kind)
        with pytest.raises(UntrustedCheckpointError, match="trust_remote_code"):
            gate_file_config({"clip": {"trust_remote_code": True}}, "f", kind)


def one_line_refusal(code: int, err: str, marker: Path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and not marker.exists(), err[-1500:]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("clipft error:"), err[-1500:]


def crafted_checkpoint(real: Path, path: Path, marker: Path, rng: random.Random) -> str:
    ckpt = torch.load(real, weights_only=True)
    planted = plant(ckpt["hyper_parameters"], hostile_node(rng, marker), rng)
    torch.save(ckpt, path)
    return planted


def test_fuzzed_checkpoints_are_refused_by_every_cli(colour_run, tmp_path, capsys):
    from clipft.cli import ask, demo, export, predict

    marker, image = tmp_path / "PWNED", colour_run["data"] / "test" / "red" / "000.png"
    rng = random.Random(29)
    entry_points = {
        "predict": lambda c: predict.main(["--ckpt", c, str(image)]),
        "ask": lambda c: ask.main(["--ckpt", c, "--image", str(image), "red", "blue"]),
        "export": lambda c: export.main([c, str(tmp_path / "out"), "--format", "safetensors"]),
    }
    try:
        import gradio  # noqa: F401

        entry_points["demo"] = lambda c: demo.main(["--ckpt", c])
    except ImportError:
        pass
    for name, call in entry_points.items():
        for i in range(3):
            ckpt = tmp_path / f"{name}{i}.ckpt"
            planted = crafted_checkpoint(colour_run["ckpt"], ckpt, marker, rng)
            code = call(str(ckpt))
            err = capsys.readouterr().err
            one_line_refusal(code, err, marker)
            assert "hyper_parameters" in err, (name, planted, err)


def test_a_fuzzed_export_record_is_refused(colour_run, tmp_path):
    from clipft.exporting.safetensors_format import MODULE_RECORD, load_safetensors_export
    from clipft.utils.file_gate import check_checkpoint  # noqa: F401 - the path build_module takes

    export_dir = tmp_path / "st"
    from clipft.cli import export

    assert export.main([str(colour_run["ckpt"]), str(export_dir), "--format", "safetensors"]) == 0
    record = json.loads((export_dir / MODULE_RECORD).read_text())
    rng = random.Random(7)
    for _ in range(3):
        crafted = json.loads(json.dumps(record))
        plant(crafted["hyper_parameters"], hostile_node(rng, tmp_path / "PWNED"), rng)
        (export_dir / MODULE_RECORD).write_text(json.dumps(crafted))
        with pytest.raises(UntrustedCheckpointError):
            load_safetensors_export(export_dir)
    assert not (tmp_path / "PWNED").exists()


def copy_run(colour_run: dict, dest: Path) -> Path:
    (dest / "checkpoints").mkdir(parents=True)
    shutil.copy(colour_run["run_dir"] / "config.yaml", dest / "config.yaml")
    shutil.copy(colour_run["ckpt"], dest / "checkpoints" / "best.ckpt")
    return dest


def craft_run_config(run: Path, marker: Path, rng: random.Random) -> str:
    config = yaml.safe_load((run / "config.yaml").read_text())
    planted = plant(config["data"], hostile_node(rng, marker), rng)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return planted


def test_soup_refuses_a_fuzzed_sweep_config(colour_run, tmp_path, capsys):
    from clipft.pipeline.soup import main

    marker, rng = tmp_path / "PWNED", random.Random(31)
    for i in range(3):
        sweep = tmp_path / f"sweep{i}"
        first = copy_run(colour_run, sweep / "0")
        copy_run(colour_run, sweep / "1")
        planted = craft_run_config(first, marker, rng)
        code = main([str(sweep), "--greedy"])
        err = capsys.readouterr().err
        one_line_refusal(code, err, marker)
        assert "config.yaml" in err, (planted, err)


@pytest.mark.slow
def test_eval_py_refuses_a_fuzzed_run_config(colour_run, tmp_path):
    """The case of the issue: a nested _target_ under data (one process per depth drawn)."""
    marker, rng = tmp_path / "PWNED", random.Random(5)
    run = copy_run(colour_run, tmp_path / "run")
    craft_run_config(run, marker, rng)
    result = run_script("eval.py", [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", f"hydra.run.dir={tmp_path / 'eval'}"], cwd=tmp_path)
    assert result.returncode == 1 and not marker.exists(), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "config.yaml" in result.stderr.splitlines()[-1]


def test_eval_data_of_a_crafted_run_is_refused_in_process(colour_run, tmp_path):
    """The same check without a process per case: every depth of the data node, in-process."""
    from omegaconf import OmegaConf

    from clipft.pipeline.run_data import with_data_of_checkpoint_run

    marker, rng = tmp_path / "PWNED", random.Random(11)
    for i in range(10):
        run = copy_run(colour_run, tmp_path / f"run{i}")
        planted = craft_run_config(run, marker, rng)
        cfg = OmegaConf.create({"ckpt_path": str(run / "checkpoints" / "best.ckpt"), "data": {}})
        with pytest.raises(UntrustedCheckpointError, match="config.yaml") as info:
            with_data_of_checkpoint_run(cfg, overrides=[])
        assert "\n" not in str(info.value), planted
    assert not marker.exists()


def test_fuzzed_checkpoints_to_start_or_resume_from_are_refused(colour_run, tmp_path):
    """init_from and ckpt_path=... use a checkpoint's weights, yet a tampered file is refused, not half-used."""
    from omegaconf import OmegaConf

    from clipft.methods.loading import load_module
    from clipft.pipeline.run_dir import check_resumable
    from clipft.pipeline.warm_start import init_weights_from

    marker, rng = tmp_path / "PWNED", random.Random(13)
    model = load_module(colour_run["ckpt"])
    cfg = OmegaConf.create({"model": {"_target_": "clipft.methods.ContrastiveFineTune"}})
    for i in range(4):
        crafted = tmp_path / f"last{i}.ckpt"
        planted = crafted_checkpoint(colour_run["run_dir"] / "checkpoints" / "last.ckpt", crafted, marker, rng)
        with pytest.raises(UntrustedCheckpointError, match="hyper_parameters"):
            init_weights_from(model, crafted)
        with pytest.raises(UntrustedCheckpointError, match="hyper_parameters") as info:
            check_resumable(crafted, cfg)
        assert "\n" not in str(info.value), planted
    assert not marker.exists()


# ---------------------------------------------------------------------------------- model folders
def write_auto_map_folder(folder: Path, marker: Path, config: dict) -> Path:
    """An HF folder whose config names its own Python (which would create ``marker`` on import)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"}}))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return folder


def test_hf_folders_with_auto_map_are_refused_naming_the_opt_in(tiny_clip_dir, tmp_path, colour_run, capsys):
    from clipft.cli import predict
    from clipft.models import HFCLIPBackbone
    from clipft.models.open_clip_backbone import OpenCLIPBackbone
    from clipft.models.remote_code import RemoteCodeRefused
    from clipft.models.towers import HFTextTower

    marker = tmp_path / "PWNED"
    clip_folder = tmp_path / "clip"
    shutil.copytree(tiny_clip_dir, clip_folder)
    write_auto_map_folder(clip_folder, marker, json.loads((tiny_clip_dir / "config.json").read_text()))
    with pytest.raises(RemoteCodeRefused, match=r"auto_map.*trust_remote_code=true"):
        HFCLIPBackbone(name_or_path=str(clip_folder))
    text = write_auto_map_folder(tmp_path / "text", marker, {"model_type": "bert", "hidden_size": 8})
    with pytest.raises(RemoteCodeRefused, match="text tower folder"):
        HFTextTower(str(text))
    local_dir = tmp_path / "open_clip"
    local_dir.mkdir()
    (local_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 8, "text_cfg": {"hf_model_name": str(text)}}}))
    with pytest.raises(RemoteCodeRefused, match="open_clip HF text tower"):
        OpenCLIPBackbone(str(local_dir))
    # through a CLI, from a checkpoint whose backbone points at the folder: one line, no prompt
    ckpt = torch.load(colour_run["ckpt"], weights_only=True)
    ckpt["hyper_parameters"]["clip"] = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(clip_folder)}
    torch.save(ckpt, tmp_path / "points_at_folder.ckpt")
    image = colour_run["data"] / "test" / "red" / "000.png"
    code = predict.main(["--ckpt", str(tmp_path / "points_at_folder.ckpt"), str(image)])
    err = capsys.readouterr().err
    one_line_refusal(code, err, marker)
    assert str(clip_folder) in err and "auto_map" in err


def test_a_fuzzed_backbone_folder_json_is_refused(tmp_path):
    from clipft.models.backbone_folder import CONFIG_NAME, FORMAT, read_folder_config

    rng = random.Random(3)
    fresh = lambda: {"format": FORMAT, "version": 1, "image_tower": {"source": "torchvision", "name": "mobilenet_v2"},
                     "text_tower": {"max_length": 32}, "embed_dim": 16, "preprocessing": {"image_size": 64}}
    for i in range(10):
        folder = tmp_path / f"b{i}"
        folder.mkdir()
        config = fresh()
        plant(config, hostile_node(rng, tmp_path / "PWNED"), rng)
        (folder / CONFIG_NAME).write_text(json.dumps(config))
        with pytest.raises(UntrustedCheckpointError):
            read_folder_config(folder)
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / CONFIG_NAME).write_text(json.dumps({**fresh(), "preprocessing": {"image_size": 60000}}))
    with pytest.raises(ClipftError, match="CLIPFT_SIZE_LIMITS=off"):
        read_folder_config(huge)
