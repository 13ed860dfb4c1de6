"""The k-shot protocol: K distinct training images per class, drawn after the duplicate-aware split.

"Distinct" follows the dedupe groups: pixel copies (``data.dedupe=group``) or a source's own
groups (GTSRB tracks) count once, so a 4-shot class never holds the same photo twice. Only the
training split shrinks; val and test are the full-data run's, so k-shot and full-data numbers
compare directly. Classes with fewer than K distinct images keep all they have, and are reported.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clipft.errors import ConfigError


@dataclass
class FewShotSelection:
    indices: list[int]
    report: dict[str, Any] = field(default_factory=dict)


def select_shots(
    labels: Sequence[int],
    shots: int,
    seed: int,
    groups: Sequence[Hashable] | None = None,
    class_names: Sequence[str] | None = None,
) -> FewShotSelection:
    """Indices of ``shots`` distinct-group samples per class (one sample per group), seeded."""
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ConfigError(f"data.shots must be an integer >= 1 or null (all training images), got {shots!r}")
    by_class: dict[int, dict[Hashable, int]] = {}
    for i, label in enumerate(labels):
        key = groups[i] if groups is not None else ("sample", i)
        by_class.setdefault(int(label), {}).setdefault(key, i)  # one representative per group
    rng = random.Random(int(seed))
    chosen: list[int] = []
    short: dict[str, int] = {}
    for label in sorted(by_class):
        representatives = sorted(by_class[label].values())
        rng.shuffle(representatives)
        chosen.extend(sorted(representatives[:shots]))
        if len(representatives) < shots:
            name = class_names[label] if class_names is not None else str(label)
            short[name] = len(representatives)
    report = {"shots": shots, "seed": int(seed), "train_images": len(chosen), "classes_with_fewer_images": short}
    return FewShotSelection(sorted(chosen), report)
