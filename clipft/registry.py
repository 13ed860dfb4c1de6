"""The one registry of what clipft can build: name -> class (or object), per kind.

=============  ====================================================  ===========================
kind           what                                                   registered by
=============  ====================================================  ===========================
method         LightningModules (``ClassificationModule`` subclasses)  defining the subclass
backbone       ``VisionLanguageBackbone`` / ``ImageBackbone`` classes  ``clipft.models`` / plugins
datamodule     ``ImageClassificationDataModule`` subclasses           ``clipft.data`` / plugins
metric         headline metrics (``HeadlineMetric``)                  ``clipft.evaluation.headline``
exporter       ``clipft-export --format`` writers                     ``clipft.exporting``
optimizer      torch optimizers a checkpoint may name                 ``clipft.utils.safe_targets``
scheduler      torch LR schedulers a checkpoint may name              ``clipft.utils.safe_targets``
=============  ====================================================  ===========================

Everything that needs "what exists" reads it here: the checkpoint allowlist
(:mod:`clipft.utils.safe_targets` derives ``SAFE_TARGETS``/``MODULE_TARGETS`` from the import
paths of the entries), the datamodule allowlist of run configs, the CLIs' ``--help``, the
contract tests and ``python -m clipft.registry`` (a listing).

A checkpoint's strings are **looked up** here, never imported: an entry's object is the class
code registered, or a dotted path code registered (resolved only because code chose it).

Out-of-tree packages register through the entry-point group ``clipft.plugins``: each entry point
is a module (importing it registers its classes) or a callable (called once). They are loaded
once, the first time anything is looked up, so a checkpoint of a plugin's method or backbone
loads in a fresh ``eval.py`` / ``clipft-predict`` process with no edit to clipft::

    [project.entry-points."clipft.plugins"]
    my_methods = "my_package.clipft_plugin"            # a module: importing it registers
    my_backbones = "my_package.backbones:register"     # or a callable
"""

from __future__ import annotations

import importlib
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "KINDS",
    "PLUGIN_GROUP",
    "Entry",
    "entries",
    "find_path",
    "get",
    "load_plugins",
    "names",
    "paths",
    "plugin_errors",
    "register",
    "register_path",
    "unregister_path",
]

KINDS = ("method", "backbone", "datamodule", "metric", "exporter", "optimizer", "scheduler")
PLUGIN_GROUP = "clipft.plugins"
# The package whose import registers clipft's own entries of each kind: constant, never from a file.
BUILTIN_PACKAGES = {
    "method": "clipft.methods",
    "backbone": "clipft.models",
    "datamodule": "clipft.data",
    "metric": "clipft.evaluation.headline",
    "exporter": "clipft.exporting",
    "optimizer": "clipft.utils.safe_targets",
    "scheduler": "clipft.utils.safe_targets",
}

T = TypeVar("T")


@dataclass
class Entry:
    """One registered thing. ``paths``: the dotted import paths a config or checkpoint may name it by
    (a class defined in ``pkg.mod`` and exported by ``pkg``: both). ``tiny``: an optional factory
    ``tiny(tmp_path) -> instance`` of a small test configuration (the contract tests build it)."""

    kind: str
    name: str
    obj: Any = None
    paths: tuple[str, ...] = ()
    tiny: Callable[[Any], Any] | None = None
    description: str = ""
    source: str = "clipft"  # the registering package ("clipft" or the plugin's module)
    _lazy_path: str | None = field(default=None, repr=False)

    def load(self) -> Any:
        """The registered object (a lazily registered path is resolved here: code chose it, not a file)."""
        if self.obj is None and self._lazy_path is not None:
            self.obj = _resolve(self._lazy_path)
        return self.obj


def _resolve(path: str) -> Any:
    """Import a path that code registered (never one a file chose: those are looked up in the entries)."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"registered path {path!r} cannot be imported")


_ENTRIES: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
_LOCK = threading.RLock()
_PLUGINS_LOADED = False
_PLUGIN_ERRORS: dict[str, str] = {}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"registry kind {kind!r} must be one of {', '.join(KINDS)}")


def class_path(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _default_paths(obj: Any) -> tuple[str, ...]:
    """The defining module's path, and the package's if the package exports the same object."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname:
        return ()
    found = [f"{module}.{qualname}"]
    parts = module.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        package = sys.modules.get(".".join(parts[:depth]))
        if package is not None and getattr(package, qualname, None) is obj:
            found.append(f"{'.'.join(parts[:depth])}.{qualname}")
    return tuple(found)


def _caller_source(obj: Any) -> str:
    module = getattr(obj, "__module__", "") or ""
    return "clipft" if module == "clipft" or module.startswith("clipft.") else module.split(".")[0] or "?"


def _is_alias(a: str, b: str) -> bool:
    """``pkg.X`` and ``pkg.mod.X``: the same name, one module a package of the other's."""
    (ma, na), (mb, nb) = a.rsplit(".", 1), b.rsplit(".", 1)
    return na == nb and (ma.startswith(mb + ".") or mb.startswith(ma + "."))


def _add(entry: Entry) -> Entry:
    """Insert ``entry``, or merge it into the entry of the same object / path / package alias."""
    with _LOCK:
        table = _ENTRIES[entry.kind]
        for old in table.values():
            same_obj = entry.obj is not None and old.obj is entry.obj
            shared = bool(set(old.paths) & set(entry.paths))
            alias = old.name == entry.name and any(_is_alias(a, b) for a in old.paths for b in entry.paths)
            if same_obj or shared or alias:
                old.paths = tuple(dict.fromkeys(old.paths + entry.paths))
                if entry.obj is not None:
                    old.obj, old._lazy_path = entry.obj, None
                old.tiny = entry.tiny or old.tiny
                old.description = entry.description or old.description
                return old
        if entry.name in table and entry.paths:  # another class under a taken name: the newcomer goes by its full path
            entry.name = entry.paths[0] if entry.paths else f"{entry.source}.{entry.name}"
        table[entry.name] = entry
        return entry


def register(
    kind: str,
    obj: Any = None,
    *,
    name: str | None = None,
    paths: Iterable[str] = (),
    tiny: Callable[[Any], Any] | None = None,
    description: str = "",
) -> Any:
    """Register ``obj`` (a class, function or metric object) as ``kind``; returns ``obj``.

    Without ``obj`` it is a class decorator: ``@register("backbone")``. ``name`` defaults to the
    class name (or the object's ``name`` attribute); ``paths`` (dotted import paths a checkpoint
    may name it by) default to the defining module's and the exporting package's.
    """
    _check_kind(kind)
    if obj is None:
        return lambda target: register(kind, target, name=name, paths=paths, tiny=tiny, description=description)
    key = name or getattr(obj, "__qualname__", None) or getattr(obj, "name", None)
    if not isinstance(key, str) or not key:
        raise ValueError(f"cannot tell the name of {obj!r}: pass name=...")
    all_paths = tuple(dict.fromkeys((*paths, *_default_paths(obj)))) if isinstance(obj, type) or callable(obj) else tuple(paths)
    if not description and isinstance(obj, type) and obj.__doc__:
        description = obj.__doc__.strip().splitlines()[0]
    _add(Entry(kind, key, obj, all_paths, tiny, description, _caller_source(obj)))
    return obj


def register_path(kind: str, path: str, *, name: str | None = None) -> None:
    """Register the class at ``path`` without importing it (trusted code names it: a constant, or a
    class registering itself from ``__init_subclass__`` before its module binds it)."""
    _check_kind(kind)
    if not isinstance(path, str) or "." not in path:
        raise ValueError(f"a registered path is dotted (package.module.Class), got {path!r}")
    source = "clipft" if path.startswith("clipft.") else path.split(".")[0]
    _add(Entry(kind, name or path.rsplit(".", 1)[1], None, (path,), source=source, _lazy_path=path))


def unregister_path(path: str) -> None:
    """Forget ``path`` (tests undo what they registered); an entry left with no path goes too."""
    with _LOCK:
        for table in _ENTRIES.values():
            for key, entry in list(table.items()):
                if path in entry.paths:
                    entry.paths = tuple(p for p in entry.paths if p != path)
                    if not entry.paths:
                        del table[key]


def load_plugins() -> dict[str, str]:
    """Load every ``clipft.plugins`` entry point, once per process; returns ``{name: error}`` of the
    ones that failed (each also warned about: a broken plugin does not stop clipft)."""
    global _PLUGINS_LOADED
    with _LOCK:
        if _PLUGINS_LOADED:
            return dict(_PLUGIN_ERRORS)
        _PLUGINS_LOADED = True  # set first: a plugin that looks something up does not recurse
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            loaded = ep.load()
            if callable(loaded) and not isinstance(loaded, type(sys)):
                loaded()
        except Exception as exc:  # noqa: BLE001 - a plugin's failure is reported, not fatal
            _PLUGIN_ERRORS[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"clipft plugin {ep.name!r} ({ep.value}) failed to load: {exc}", RuntimeWarning, stacklevel=2)
    return dict(_PLUGIN_ERRORS)


def plugin_errors() -> dict[str, str]:
    return dict(_PLUGIN_ERRORS)


def _ensure(kinds: Iterable[str]) -> None:
    for kind in kinds:
        _check_kind(kind)
        importlib.import_module(BUILTIN_PACKAGES[kind])  # a constant: clipft's own package of that kind
    load_plugins()


def entries(kind: str) -> dict[str, Entry]:
    """``{name: Entry}`` of one kind, clipft's own and every plugin's, sorted by name."""
    _ensure([kind])
    with _LOCK:
        return dict(sorted(_ENTRIES[kind].items()))


def names(kind: str) -> list[str]:
    return list(entries(kind))


def get(kind: str, name: str) -> Any:
    """The object registered as ``kind`` ``name`` (or by one of its dotted paths); KeyError otherwise."""
    table = entries(kind)
    if name in table:
        return table[name].load()
    for entry in table.values():
        if name in entry.paths:
            return entry.load()
    raise KeyError(f"no {kind} {name!r} is registered (registered: {', '.join(table)})")


def paths(*kinds: str) -> set[str]:
    """Every dotted path registered for ``kinds``: what a checkpoint may name."""
    _ensure(kinds)
    with _LOCK:
        return {p for kind in kinds for entry in _ENTRIES[kind].values() for p in entry.paths}


def find_path(path: str, kinds: Iterable[str] = KINDS) -> Entry | None:
    """The entry a dotted path names, or None: a lookup, nothing is imported for ``path``."""
    kinds = tuple(kinds)
    if not isinstance(path, str):
        return None
    _ensure(kinds)
    with _LOCK:
        for kind in kinds:
            for entry in _ENTRIES[kind].values():
                if path in entry.paths:
                    return entry
    return None


def iter_all() -> Iterator[Entry]:
    for kind in KINDS:
        yield from entries(kind).values()


def listing(kinds: Iterable[str] = ("method", "backbone", "datamodule", "metric", "exporter")) -> str:
    """A plain-text listing (``python -m clipft.registry``, the CLIs' ``--help`` epilogs)."""
    lines = []
    for kind in kinds:
        table = entries(kind)
        lines.append(f"{kind}s ({len(table)}):")
        for key, entry in table.items():
            where = entry.paths[-1] if entry.paths else entry.description
            origin = "" if entry.source == "clipft" else f"  [plugin: {entry.source}]"
            lines.append(f"  {key:<28} {where}{origin}")
    for name, error in plugin_errors().items():
        lines.append(f"plugin {name!r} failed to load: {error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m clipft.registry", description="List what clipft can build.")
    parser.add_argument("kinds", nargs="*", metavar="KIND", help=f"any of {', '.join(KINDS)} (default: all but optimizer, scheduler)")
    args = parser.parse_args(argv)
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kind(s) {', '.join(unknown)}: choose from {', '.join(KINDS)}")
    print(listing(args.kinds or ("method", "backbone", "datamodule", "metric", "exporter")))
    return 0


if __name__ == "__main__":  # run as __main__: list the entries of the imported clipft.registry module
    from clipft.registry import main as _main

    raise SystemExit(_main())
