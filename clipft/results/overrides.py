"""Hydra override lines (``key=value key2=value2``): what a sweep swept, and what makes a setting."""

from __future__ import annotations

from collections.abc import Callable, Sequence

# overrides that do not make a different setting: the seeds themselves (training seed, few-shot draw)
# and bookkeeping that cannot change a number (where the run writes, what it is called, plots)
SEED_KEYS = ("seed", "data.shot_seed")
BOOKKEEPING_KEYS = ("run_name", "plots", "tags")
BOOKKEEPING_PREFIXES = ("hydra.",)


def split_override(item: str) -> tuple[str, str | None]:
    key, sep, value = item.partition("=")
    return key, (value if sep else None)


def _keep(overrides: str, drop: Callable[[str], bool]) -> list[str]:
    return [item for item in str(overrides or "").split() if not drop(split_override(item)[0].lstrip("+~"))]


def setting_of(overrides: str) -> str:
    """The overrides that define a run's setting, sorted: everything but seeds and bookkeeping.

    ``model.optimizer.lr=0.2 seed=1 hydra.run.dir=x`` -> ``model.optimizer.lr=0.2``: two runs with the
    same setting differ only in their seed, two with different settings are different rows.
    """
    kept = _keep(overrides, lambda k: k in SEED_KEYS or k in BOOKKEEPING_KEYS or k.startswith(BOOKKEEPING_PREFIXES))
    return " ".join(sorted(kept))


def without_bookkeeping(overrides: str) -> str:
    """The overrides less those that cannot change a number (where the run writes, its name, plots)."""
    drop = lambda k: k in BOOKKEEPING_KEYS or k.startswith(BOOKKEEPING_PREFIXES) or k.startswith("paths.")
    return " ".join(_keep(overrides, drop))


def varying_overrides(overrides: Sequence[str]) -> list[str]:
    """Per run, only the ``key=value`` overrides that differ between runs (what a sweep swept)."""
    parsed = [dict(split_override(o) for o in str(line).split()) for line in overrides]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1] if len(parsed) > 1 else keys
    return [" ".join(f"{k}={p[k]}" for k in varying if k in p) for p in parsed]


def swept_values(overrides: Sequence[str]) -> dict[str, list[str | None]]:
    """``key -> value per run`` for every override key whose value differs between runs (one column each)."""
    parsed = [dict(split_override(o) for o in str(line).split()) for line in overrides]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    return {k: [p.get(k) for p in parsed] for k in keys if len(parsed) > 1 and len({p.get(k) for p in parsed}) > 1}
