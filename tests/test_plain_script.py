"""docs/extending.md's plain script (datamodule + method + L.Trainer, no Hydra) runs as written,
because it calls ``clipft.wire(dm, model)``; without that line the model gets the datamodule's 224 px default."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest
from eval_helpers import make_colour_dataset

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
TRAINER = "L.Trainer(max_epochs=5)"
FAST_TRAINER = ("L.Trainer(max_epochs=1, accelerator='cpu', logger=False, enable_checkpointing=False, "
                "enable_progress_bar=False, enable_model_summary=False, limit_train_batches=2, num_sanity_val_steps=0)")


def plain_script() -> str:
    section = DOC.read_text().split("## Without Hydra: a plain script", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def tiny_version(code: str, data: Path, clip_dir: Path) -> str:
    """The doc's script with its paths, backbone and trainer swapped for tiny ones (each must be in the doc)."""
    for old, new in [("data/my_signs/train", str(data / "train")), ("data/my_signs/test", str(data / "test")),
                     ("openai/clip-vit-base-patch32", str(clip_dir)), (TRAINER, FAST_TRAINER)]:
        assert code.count(old) == 1, f"docs/extending.md's plain script no longer holds {old!r}"
        code = code.replace(old, new)
    return code


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    return make_colour_dataset(tmp_path_factory.mktemp("plain-script") / "colours", train_per_class=10, test_per_class=2,
                               size=45)


def run(code: str, folder: Path) -> dict:
    script = folder / "plain_script.py"
    script.write_text(code)
    return runpy.run_path(str(script), run_name="__main__")


def test_the_documented_plain_script_trains_and_tests_on_the_models_preprocessing(colours, tiny_clip_dir, tmp_path, monkeypatch):
    code = plain_script()
    assert "clipft.wire(dm, model)" in code
    monkeypatch.chdir(tmp_path)  # Lightning writes nothing into the repo
    ns = run(tiny_version(code, colours, tiny_clip_dir), tmp_path)
    dm, model, trainer = ns["dm"], ns["model"], ns["trainer"]
    assert dm.preprocessing == {"image_size": 32, **{k: list(v) for k, v in model.preprocessing.items() if k != "image_size"}}
    assert trainer.state.finished and trainer.current_epoch == 1
    assert tuple(model.test_outputs["probs"].shape) == (6, 3)  # 2 test images x 3 colours, at the tiny model's 32 px


def test_without_the_wire_line_the_script_fails_on_the_image_size(colours, tiny_clip_dir, tmp_path, monkeypatch):
    code = tiny_version(plain_script(), colours, tiny_clip_dir)
    unwired = "\n".join(line for line in code.splitlines() if "clipft.wire(" not in line)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"224\*224.*32\*32"):
        run(unwired, tmp_path)


def test_wire_is_public_and_prefers_a_checkpoints_recorded_preprocessing():
    import clipft
    from clipft.data.base import wire

    assert clipft.wire is wire and "wire" in clipft.__all__

    from types import SimpleNamespace

    class DM:
        def configure_preprocessing(self, **kw):
            self.got = kw

    own = {"image_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3}
    recorded = {"preprocessing": {"image_size": 336, "mean": [0.1] * 3, "std": [0.2] * 3}}
    loaded = SimpleNamespace(preprocessing=own, checkpoint_meta=recorded)
    assert wire(DM(), loaded).got["image_size"] == 336  # a loaded checkpoint: what it was trained with
    assert wire(DM(), SimpleNamespace(preprocessing=own)).got == own  # a fresh model: its backbone's
