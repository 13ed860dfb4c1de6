"""The GTSRB <-> 58-class concept map names real classes, and shared/unshared accuracy adds up."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

from clipft.data.gtsrb import GTSRB_CLASSES
from clipft.errors import ConfigError
from clipft.evaluation.concepts import load_concept_map, shared_class_ids, split_accuracy

MAP = ROOT / "clipft" / "class_descriptions" / "concepts_gtsrb_traffic_signs.yaml"


def signs58_names() -> dict[int, str]:
    """labels.csv's names, as the comments of class_descriptions/traffic_signs.yaml record them."""
    names = {}
    for line in (ROOT / "clipft" / "class_descriptions" / "traffic_signs.yaml").read_text().splitlines():
        match = re.match(r"^(\d+): \[.*\]\s+#\s*(.+)$", line)
        if match:  # "Bicycles crossing, warning triangle": the qualifier after the comma is the file's own
            names[int(match.group(1))] = match.group(2).split(", ")[0].strip()
    assert len(names) == 58
    return names


def test_concept_map_parses_and_names_real_classes():
    concept_map = load_concept_map(MAP)
    theirs = signs58_names()
    for concept, entry in concept_map["concepts"].items():
        gtsrb_name, signs_names = entry["names"]
        signs_names = signs_names if isinstance(signs_names, list) else [signs_names] * len(entry["traffic_signs"])
        assert all(GTSRB_CLASSES[i] == gtsrb_name for i in entry["gtsrb"]), concept
        assert [theirs[i] for i in entry["traffic_signs"]] == signs_names, concept
    shared_gtsrb, shared_signs = shared_class_ids(concept_map, "gtsrb"), shared_class_ids(concept_map, "traffic_signs")
    assert len(shared_gtsrb) == len(concept_map["concepts"]) and 14 not in shared_gtsrb  # GTSRB's stop: China's set has none
    assert {19, 4} <= shared_signs and 47 not in shared_signs  # both 50 km/h classes; train crossing: GTSRB has none
    with pytest.raises(ConfigError, match="not in the concept map"):
        shared_class_ids(concept_map, "imagenet")


def test_split_accuracy_weights_by_images():
    report = {"per_class": {
        "a": {"accuracy": 1.0, "support": 4},
        "b": {"accuracy": 0.5, "support": 2},
        "c": {"accuracy": 0.0, "support": 3},
        "d": {"accuracy": None, "support": 0},
    }}
    result = split_accuracy(report, ["a", "b", "c", "d"], shared={0, 2, 3})
    assert result["all_accuracy"] == pytest.approx(5 / 9)
    assert result["shared_accuracy"] == pytest.approx(4 / 7) and result["shared_images"] == 7
    assert result["unshared_accuracy"] == pytest.approx(1 / 2) and result["unshared_images"] == 2


def test_a_broken_concept_map_is_one_line(tmp_path):
    bad = tmp_path / "map.yaml"
    bad.write_text("datasets: [gtsrb, traffic_signs]\nconcepts:\n  stop: {gtsrb: [14]}\n")
    with pytest.raises(ConfigError, match="concept 'stop' needs a list of class ids for 'traffic_signs'"):
        load_concept_map(bad)
