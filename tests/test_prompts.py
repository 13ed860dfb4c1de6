"""Prompts: template sets, descriptions (by name or label id), training-prompt modes, shipped files."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import CONF_DIR, compose

from clipft.errors import ConfigError, DataError
from clipft.prompts import (
    build_prompt_set,
    load_descriptions,
    load_template_set,
    prompt_set_from_config,
)

ROOT = CONF_DIR.parent


def test_templates_times_names_then_descriptions_then_extras():
    ps = build_prompt_set(
        ["stop", "yield"], ["a photo of a {}.", "a sign: {name}"], {"stop": ["red octagon"], "yield": ["triangle"]},
        extra={1: "give way"},
    )
    assert ps.per_class == [
        ["a photo of a stop.", "a sign: stop", "red octagon"],
        ["a photo of a yield.", "a sign: yield", "triangle", "give way"],
    ]
    assert ps.training_prompts("first") == ["a photo of a stop.", "a photo of a yield."]
    assert ps.training_prompts("description", random.Random(0)) in (["red octagon", "triangle"], ["red octagon", "give way"])


def test_empty_templates_means_descriptions_only():
    ps = build_prompt_set(["a", "b"], [], {"a": ["desc a"], "b": ["desc b"]})
    assert ps.per_class == [["desc a"], ["desc b"]]
    with pytest.raises(ConfigError, match="no prompt"):
        build_prompt_set(["a", "b"], [], None)


def test_random_training_prompt_is_one_of_the_class_prompts():
    ps = build_prompt_set(["a", "b"], ["x {}", "y {}"], {"a": ["da"], "b": ["db"]})
    rng = random.Random(1)
    seen = set()
    for _ in range(30):
        picks = ps.training_prompts("random", rng)
        assert picks[0] in ps.per_class[0] and picks[1] in ps.per_class[1]
        seen.add(picks[0])
    assert seen == set(ps.per_class[0])


def test_description_mode_without_descriptions_is_a_config_error():
    with pytest.raises(ConfigError, match="descriptions"):
        prompt_set_from_config(["a", "b"], {"templates": ["{}"], "train_prompt": "description"})
    with pytest.raises(ConfigError, match="train_prompt"):
        prompt_set_from_config(["a", "b"], {"templates": ["{}"], "train_prompt": "sometimes"})


def test_descriptions_by_name_and_by_label_id(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("stop: red octagon\n1: [white triangle, give way]\n")
    assert load_descriptions(f, ["stop", "yield"]) == {"stop": ["red octagon"], "yield": ["white triangle", "give way"]}


def test_folder_ids_as_class_names_match_by_name_not_by_position(tmp_path):
    # FolderDataModule sorts "0", "1", "10", "2": key 10 must be the folder "10", not label 10
    names = sorted(str(i) for i in range(12))
    f = tmp_path / "d.yaml"
    f.write_text("".join(f"{i}: desc {i}\n" for i in range(12)))
    got = load_descriptions(f, names)
    assert got["10"] == ["desc 10"] and names.index("10") == 2


def test_missing_and_unknown_classes_are_all_listed(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("stop: a\nparking: b\nbanana: c\n")
    with pytest.raises(DataError) as err:
        load_descriptions(f, ["stop", "yield", "no entry", "parking"])
    msg = str(err.value)
    assert "'yield'" in msg and "'no entry'" in msg and "banana" in msg and str(f) in msg


def test_missing_file_and_empty_description_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_descriptions(tmp_path / "nope.yaml", ["a", "b"])
    f = tmp_path / "d.yaml"
    f.write_text("a: ''\nb: x\n")
    with pytest.raises(DataError, match="'a'"):
        load_descriptions(f, ["a", "b"])


def test_shipped_description_files_cover_their_datasets():
    from clipft.data.gtsrb import GTSRB_CLASSES
    from clipft.data.synthetic_signs import SIGN_CLASSES

    assert len(load_descriptions("class_descriptions/gtsrb.yaml", GTSRB_CLASSES)) == 43
    assert len(load_descriptions("class_descriptions/synthetic_signs.yaml", list(SIGN_CLASSES))) == 10
    ts = load_descriptions("class_descriptions/traffic_signs.yaml", [f"class {i}" for i in range(58)])
    assert "number 5," in ts["class 0"][0] and "give way" in ts["class 53"][0]


def test_template_sets_load_and_compose_into_the_model():
    sets = {p.stem: load_template_set(p) for p in (CONF_DIR / "prompts").glob("*.yaml")}
    assert len(sets["imagenet80"]) == 80 and len(set(sets["imagenet80"])) == 80
    assert {"simple", "traffic", "blurry", "imagenet80"} <= set(sets)
    assert all("{}" in t for t in sets["traffic"] + sets["blurry"])
    cfg = compose(["model=clip_flyp", "prompts@model.prompts=traffic"])
    assert list(cfg.model.prompts.templates) == sets["traffic"]


def test_relative_description_path_resolves_to_the_packaged_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert Path("class_descriptions/gtsrb.yaml").exists() is False
    from clipft.data.synthetic_signs import SIGN_CLASSES

    assert len(load_descriptions("class_descriptions/synthetic_signs.yaml", list(SIGN_CLASSES))) == 10


def test_descriptions_by_label_id_follow_the_dataset_when_a_run_keeps_a_class_subset(tmp_path):
    """data.classes=novel relabels the second half from 0: a file keyed by the dataset's label ids must still give
    each class its own description (the pipeline passes the dataset's classes as prompts.dataset_classes)."""
    path = tmp_path / "d.yaml"
    path.write_text('0: "a red disc"\n1: "a blue disc"\n2: "a yellow triangle"\n3: "a white square"\n')
    every = ["stop", "keep left", "warning", "parking"]
    novel = ["warning", "parking"]
    assert load_descriptions(path, novel, every) == {"warning": ["a yellow triangle"], "parking": ["a white square"]}
    with pytest.raises(DataError, match=r"unknown .*\['2', '3'\]"):  # without the dataset's classes: ids 2, 3 point nowhere
        load_descriptions(path, novel)
    prompts = prompt_set_from_config(novel, {"templates": [], "descriptions": str(path), "dataset_classes": every})
    assert prompts.per_class == [["a yellow triangle"], ["a white square"]]
