"""Safety, round two (docs/reliability.md, "Threat model"): the odd files of issue 29, each one line.

Every test here fails without its fix: a class folder that is itself a link out of the root, sizes a
file can set, file text printed as markup, unknown tower keys and non-string class names, streams
whose chunks or labels disagree with their description, a damaged Optuna study and a run directory
that cannot be written.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest
import torch
from eval_helpers import make_colour_dataset

from clipft.errors import ClipftError, ConfigError, DataError


def test_a_class_folder_that_is_a_symlink_out_of_the_root_is_refused(tmp_path):
    from clipft.data.folder import scan_class_folders

    data = make_colour_dataset(tmp_path / "colours", train_per_class=2, test_per_class=1)
    outside = tmp_path / "outside_images"
    shutil.move(str(data / "train" / "red"), outside)
    os.symlink(outside, data / "train" / "red")
    with pytest.raises(DataError, match="class folder .*red.* is a symlink .*outside the dataset root.*follow_symlinks=true"):
        scan_class_folders(data / "train")
    _, samples = scan_class_folders(data / "train", follow_symlinks=True)  # the opt-in still reads it
    assert any("/red/" in s.path for s in samples)


def test_a_list_file_label_past_the_class_bound_is_one_line(tmp_path):
    from clipft.data.folder import read_list_file

    image = make_colour_dataset(tmp_path / "c", train_per_class=1, test_per_class=1) / "train" / "red" / "000.png"
    listing = tmp_path / "train.txt"
    listing.write_text(f"{image} 2000000000\n")
    with pytest.raises(DataError, match="2000000001 classes, beyond clipft's bound of 100000"):
        read_list_file(listing, None, None, allow_outside_root=True)


@pytest.mark.parametrize(("value", "match"), [(100000, "bound of 4096"), (4096, None)])
def test_image_sizes_are_bounded_before_allocation(value, match):
    from clipft.utils.arguments import check_image_size

    if match is None:
        assert check_image_size(value, "data.image_size") == value
        return
    with pytest.raises(ConfigError, match=match) as info:
        check_image_size(value, "data.image_size")
    assert "CLIPFT_SIZE_LIMITS=off" in str(info.value) and "batch_size" not in str(info.value)


def test_size_limits_can_be_lifted(monkeypatch):
    from clipft.utils.arguments import check_image_size

    monkeypatch.setenv("CLIPFT_SIZE_LIMITS", "off")
    assert check_image_size(100000, "data.image_size") == 100000


def test_an_hf_folder_with_huge_layers_is_refused_before_loading(tiny_clip_dir, tmp_path):
    from clipft.models import HFCLIPBackbone

    folder = tmp_path / "huge"
    shutil.copytree(tiny_clip_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["intermediate_size"] = 65536 * 8
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ClipftError, match="intermediate_size=524288 exceeds clipft's bound"):
        HFCLIPBackbone(name_or_path=str(folder))


def test_a_config_only_clip_from_a_file_is_bounded():
    from clipft.models import HFCLIPBackbone

    with pytest.raises(ClipftError, match="image_size=60000"):
        HFCLIPBackbone(config={"vision_config": {"image_size": 60000}})


def test_file_text_is_printed_literally_not_as_markup(capsys):
    from clipft.cli.common import run_cli

    def main(argv):
        raise ConfigError("checkpoint names the module '[/x]' and [bold]this[/bold]")

    assert run_cli(main, []) == 1
    err = capsys.readouterr().err
    assert "'[/x]'" in err and "[bold]this[/bold]" in err and "Traceback" not in err


def test_unknown_tower_keys_and_non_string_class_names_are_one_line(tiny_clip_dir):
    from clipft.methods import CLIPZeroShot
    from clipft.models.dual_encoder import DualEncoderBackbone

    with pytest.raises(ConfigError, match=r"image_tower has unknown key\(s\) \['evil'\]"):
        DualEncoderBackbone(image_tower={"name": "mobilenet_v2", "evil": 1}, text_tower={"name_or_path": "x"})
    with pytest.raises(ConfigError, match="class_names must be strings"):
        CLIPZeroShot(class_names=[1, 2, 3], clip={"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)})


# ------------------------------------------------------------------------------------------ streams
@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    from data_trees import make_traffic_signs

    from clipft.data import TrafficSignsDataModule
    from clipft.data.streaming import write_stream

    root = tmp_path_factory.mktemp("signs")
    make_traffic_signs(root / "ts", per_class=(6, 6, 6, 3))
    source = TrafficSignsDataModule(root=str(root / "ts"), cache_dir=str(root / "cache"), image_size=8, batch_size=4,
                                    transform_options={"rotation": 0})
    source.setup()
    return write_stream(source, root / "stream")


def streamed(path):
    from clipft.data.streaming import StreamingDataModule

    return StreamingDataModule(input_dir=str(path), image_size=8, batch_size=4, num_workers=0)


def test_a_truncated_stream_chunk_is_one_line_at_setup(stream, tmp_path):
    copy = tmp_path / "stream"
    shutil.copytree(stream, copy)
    chunk = sorted((copy / "train").glob("*.bin"))[0]
    chunk.write_bytes(chunk.read_bytes()[:-7])
    with pytest.raises(DataError, match=rf"stream chunk .*{chunk.name}.* bytes, its index says .* \(truncated"):
        streamed(copy).setup()


def test_stream_labels_past_the_classes_are_refused(stream, tmp_path):
    from clipft.data.streaming import META_FILE, _decode_item

    copy = tmp_path / "stream"
    shutil.copytree(stream, copy)
    meta = json.loads((copy / META_FILE).read_text())
    meta["splits"]["train"]["labels"][0] = 99
    (copy / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"lists label 99 for \d+ classes"):
        streamed(copy).setup()
    # labels inside the chunks are checked as items are read (an IndexError / device assert otherwise)
    with pytest.raises(DataError, match="stream item 5 has label 7, outside the 3 classes"):
        _decode_item({"index": 5, "label": 7, "image": torch.zeros(3, dtype=torch.uint8).numpy()}, None, 3)


# ------------------------------------------------------------------------------- sweeps and run dirs
def test_a_damaged_optuna_study_is_one_line_naming_the_file(tmp_path):
    import optuna

    from clipft.pipeline.optuna_resume import storage_error_line

    db = tmp_path / "study.db"
    db.write_bytes(b"this is not a database" * 100)
    storage = f"sqlite:///{db}"
    with pytest.raises(Exception) as info:
        optuna.load_study(study_name="s", storage=storage)
    line = storage_error_line(storage, info.value)
    assert line is not None and str(db) in line and "\n" not in line and "move it away" in line
    assert storage_error_line(storage, ValueError("a bug")) is None
    assert isinstance(sqlite3.DatabaseError("x"), Exception) and storage_error_line(storage, sqlite3.DatabaseError("locked"))


def test_a_run_dir_that_cannot_be_written_is_one_line(tmp_path):
    from clipft.pipeline.run_dir import claim_run_dir

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"run directory .*a_file/run.* cannot be written .*set hydra.run.dir"):
        claim_run_dir(blocker / "run")
