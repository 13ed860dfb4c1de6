"""Inputs from strangers: descriptions, checkpoints of other classes, odd file names, YAML tags."""

from __future__ import annotations

import pytest
import torch
from conftest import compose, run_script
from PIL import Image

from clipft.data.images import load_rgb
from clipft.errors import DataError
from clipft.prompts import load_descriptions


def test_descriptions_missing_classes_are_named(tmp_path):
    path = tmp_path / "desc.yaml"
    path.write_text("stop: a red octagon\nyield: a red triangle\nbanana: a fruit\n")
    with pytest.raises(DataError, match=r"missing: \['parking'\].*unknown .*\['banana'\]"):
        load_descriptions(path, ["stop", "yield", "parking"])


def test_descriptions_yaml_tags_are_not_executed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("stop: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(DataError, match="not valid YAML"):
        load_descriptions(path, ["stop"])
    assert not (tmp_path / "pwned").exists()


def test_image_paths_with_spaces_and_unicode(tmp_path):
    folder = tmp_path / "Straße links ⛔" / "vorfahrt achten"
    folder.mkdir(parents=True)
    path = folder / "schild 1 – ü.png"
    Image.new("RGBA", (5, 4), (0, 0, 255, 128)).save(path)
    assert load_rgb(path).mode == "RGB"
    with pytest.raises(DataError, match="schild 2 – ü.png"):
        load_rgb(folder / "schild 2 – ü.png")


def tiny_checkpoint(path, class_names, tmp_path):
    """A clipft checkpoint (module + plain hparams + weights) of a tiny CLIP for ``class_names``."""
    from clipft.methods.classification import module_class_path, plain_containers
    from clipft.pipeline.building import build_model

    model = build_model(compose([], root=tmp_path), class_names)
    torch.save(
        {"clipft": {"module": module_class_path(model)}, "hyper_parameters": plain_containers(dict(model.hparams)), "state_dict": model.state_dict()},
        path,
    )
    return path


@pytest.mark.slow
def test_eval_with_a_checkpoint_of_other_classes_names_them(tmp_path, synthetic_root):
    names = sorted(p.name for p in (synthetic_root / "train").iterdir() if p.is_dir())
    assert len(names) == 10
    ckpt = tiny_checkpoint(tmp_path / "other.ckpt", [*names[:-1], "llama crossing"], tmp_path)
    result = run_script("eval.py", [f"ckpt_path={ckpt}", f"data.root={synthetic_root}", "trainer.accelerator=cpu"], cwd=tmp_path, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    line = [l for l in result.stderr.splitlines() if l.startswith("clipft error:")]
    assert line and "llama crossing" in line[0] and names[-1] in line[0], result.stderr[-3000:]
