"""Bad data gets one clear DataError/ConfigError naming the file and the fix; odd PNG modes load as RGB."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, run_script
from data_trees import make_gtsrb, make_traffic_signs, write_png
from PIL import Image

from clipft.data import FolderDataModule, GTSRBDataModule, TrafficSignsDataModule
from clipft.data.images import load_rgb
from clipft.errors import ConfigError, DataError


def traffic(root: Path, tmp_path: Path, **kwargs) -> TrafficSignsDataModule:
    dm = TrafficSignsDataModule(root=str(root), cache_dir=str(tmp_path / "cache"), **kwargs)
    dm.setup()
    return dm


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_missing_root_names_the_absolute_path_tried(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        traffic(Path("no/such/signs"), tmp_path, base_dir=str(tmp_path / "proj"))
    assert str(tmp_path / "no/such/signs") in str(err.value)
    assert str(tmp_path / "proj/no/such/signs") in str(err.value) and "data.root" in str(err.value)


def test_root_without_labels_csv_says_what_layout_is_expected(tmp_path):
    root = make_traffic_signs(tmp_path / "ts")
    (root / "labels.csv").unlink()
    with pytest.raises(DataError, match="labels.csv.*does not exist.*traffic_Data/DATA"):
        traffic(root, tmp_path)


def test_empty_class_folder(tmp_path):
    root = make_traffic_signs(tmp_path / "ts")
    for f in (root / "traffic_Data" / "DATA" / "1").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"DATA/1'.*'Go Left'.*holds no images"):
        traffic(root, tmp_path)
    (tmp_path / "tree" / "a").mkdir(parents=True)
    write_png(tmp_path / "tree" / "b" / "0.png", seed=0)
    with pytest.raises(DataError, match=r"tree/a'.*holds no images"):
        FolderDataModule(root=str(tmp_path / "tree"), cache_dir=str(tmp_path / "cache")).setup()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: shutil.copytree(r / "traffic_Data/DATA/1", r / "traffic_Data/DATA/9"), r"folders with no row.*\[9\]"),
        (lambda r: shutil.rmtree(r / "traffic_Data/DATA/2"), r"ClassIds with no folder: \[2\]"),
        (lambda r: (r / "traffic_Data/DATA/extra").mkdir(), r"not named by a ClassId: \['extra'\]"),
        (lambda r: (r / "labels.csv").write_text("id,label\n0,a\n"), "header 'ClassId,Name'"),
        (lambda r: (r / "labels.csv").write_text("ClassId,Name\nx,a\n"), "row 2"),
        (lambda r: write_png(r / "traffic_Data/TEST/stop.png", seed=1), r"TEST/stop.png.*not named"),
        (lambda r: write_png(r / "traffic_Data/TEST/042_0001_j.png", seed=1), "ClassId 42, which labels.csv does not list"),
    ],
)
def test_labels_csv_and_folders_must_agree(tmp_path, change, message):
    root = make_traffic_signs(tmp_path / "ts")
    change(root)
    with pytest.raises(DataError, match=message):
        traffic(root, tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "not_an_image"])
def test_bad_image_errors_by_default_and_is_skipped_on_request(tmp_path, damage):
    root = make_traffic_signs(tmp_path / "ts")
    bad = root / "traffic_Data" / "DATA" / "0" / "000_0003.png"
    if damage == "truncated":
        truncate(bad)
    else:
        bad.write_text("this is not a PNG")
    with pytest.raises(DataError) as err:
        traffic(root, tmp_path)
    assert str(bad) in str(err.value) and "data.on_bad_image=skip" in str(err.value)

    dm = traffic(root, tmp_path, on_bad_image="skip")
    used = {s.path for s in [*dm.train_samples, *dm.val_samples, *dm.test_samples]}
    assert str(bad) not in used and dm.split_report["skipped_images"] == 1
    dm.write_reports(tmp_path / "run")
    assert (tmp_path / "run" / "skipped_images.txt").read_text().startswith(str(bad))
    assert json.loads((tmp_path / "run" / "data_report.json").read_text())["skipped"][0]["path"] == str(bad)


def test_bad_image_met_while_loading_names_the_file(tmp_path):
    """dedupe=none and no leak check: nothing is decoded at setup, so the loader must still say which file."""
    root = make_traffic_signs(tmp_path / "ts", test=False)
    dm = traffic(root, tmp_path, dedupe="none", image_size=8, batch_size=64, val_fraction=0.0, test_fraction=0.0)
    bad = truncate(Path(dm.train_samples[0].path))
    with pytest.raises(DataError, match=str(bad)):
        next(iter(dm.train_dataloader()))


def test_odd_png_modes_load_as_rgb(tmp_path):
    grey = Image.fromarray(np.full((4, 4), 77, dtype=np.uint8), mode="L")
    grey.save(tmp_path / "grey.png")
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :2, 3] = 255  # left half opaque red, right half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((4, 4, 3), (0, 0, 200), dtype=np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    Image.fromarray(np.full((4, 4), 65535 // 2, dtype=np.uint16)).save(tmp_path / "sixteen.png")

    assert np.asarray(load_rgb(tmp_path / "grey.png")).tolist()[0][0] == [77, 77, 77]
    rgba_px = np.asarray(load_rgb(tmp_path / "rgba.png"))
    assert rgba_px[0, 0].tolist() == [255, 0, 0] and rgba_px[0, 3].tolist() == [255, 255, 255]  # on white
    assert np.asarray(load_rgb(tmp_path / "palette.png"))[0, 0].tolist() == [0, 0, 200]
    sixteen = np.asarray(load_rgb(tmp_path / "sixteen.png"))
    assert sixteen.dtype == np.uint8 and 120 <= sixteen[0, 0, 0] <= 135  # half scale, not clipped to 255


def test_gtsrb_missing_files_name_the_expected_paths(tmp_path):
    root = make_gtsrb(tmp_path / "g", per_class=1, num_classes=43)
    (root / "gtsrb" / "GT-final_test.csv").unlink()
    with pytest.raises(DataError) as err:
        GTSRBDataModule(root=str(root), cache_dir=str(tmp_path / "c")).setup()
    assert str(root / "gtsrb" / "GT-final_test.csv") in str(err.value) and "data.download=true" in str(err.value)
    with pytest.raises(DataError, match="data.download=true"):
        GTSRBDataModule(root=str(tmp_path / "nowhere")).setup()


@pytest.mark.parametrize(
    "key, value",
    [("dedupe", "yes"), ("test_view", "dirty"), ("on_bad_image", "ignore"), ("normalization", "z")],
)
def test_bad_choices_are_config_errors(tmp_path, key, value):
    with pytest.raises(ConfigError, match=f"data.{key}"):
        TrafficSignsDataModule(root=str(tmp_path), **{key: value})


def test_list_file_errors_name_the_line(tmp_path):
    write_png(tmp_path / "a.png", seed=0)
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    for text, message in (("a.png\n", "line 1"), ("a.png 5\n", "outside 0..2-1"), ("a.png cow\n", "'cow'"),
                          ("gone.png 0\n", "gone.png.*does not exist")):
        (tmp_path / "train.txt").write_text(text)
        dm = FolderDataModule(train_list=str(tmp_path / "train.txt"), class_names_file=str(tmp_path / "names.txt"),
                              cache_dir=str(tmp_path / "c"))
        with pytest.raises(DataError, match=message):
            dm.setup()


def test_list_file_paths_may_not_escape_the_dataset_root(tmp_path):
    """A downloaded list file cannot make the loader read files outside the dataset folder."""
    root = tmp_path / "dataset"
    write_png(root / "a.png", seed=0)
    secret = write_png(tmp_path / "elsewhere" / "secret.png", seed=1)
    (root / "names.txt").write_text("cat\ndog\n")
    for line in ("../elsewhere/secret.png 1", f"{secret} 1"):
        (root / "train.txt").write_text(f"a.png 0\n{line}\n")
        kwargs = dict(train_list=str(root / "train.txt"), class_names_file=str(root / "names.txt"), cache_dir=str(tmp_path / "c"))
        with pytest.raises(DataError, match="line 2.*outside the dataset root.*allow_paths_outside_root"):
            FolderDataModule(**kwargs).setup()
        trusted = FolderDataModule(allow_paths_outside_root=True, val_fraction=0.0, test_fraction=0.0, **kwargs)
        trusted.setup()
        assert any(Path(s.path).resolve() == Path(secret).resolve() for s in trusted.train_samples + trusted.val_samples)


@pytest.mark.slow
def test_train_cli_skips_bad_images_and_reports_missing_root(tmp_path):
    root = make_traffic_signs(tmp_path / "ts", per_class=(4, 4, 4, 4))
    bad = truncate(root / "traffic_Data" / "DATA" / "2" / "002_0001.png")
    fast = [a for a in FAST if not a.startswith("data.")] + ["trainer.max_epochs=1", "data.batch_size=8",
                                                             "data.num_workers=0", "data.persistent_workers=false"]
    ok = run_script("train.py", ["data=traffic_signs", f"data.root={root}", "data.on_bad_image=skip", *fast], tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    run_dir = next((tmp_path / "outputs").rglob("skipped_images.txt")).parent
    assert str(bad) in (run_dir / "skipped_images.txt").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["duplicates"]["test_overlap_files"] == 4

    missing = run_script("train.py", ["data=traffic_signs", "data.root=nowhere/signs", *fast], tmp_path)
    assert missing.returncode == 1
    assert f"clipft error: data.root='nowhere/signs' does not exist (tried '{tmp_path / 'nowhere/signs'}'" in missing.stderr
    assert "Traceback" not in missing.stderr
