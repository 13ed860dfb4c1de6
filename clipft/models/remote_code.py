"""A model folder never runs its own Python unless the user says so.

An HF folder whose ``config.json`` (or tokenizer / processor config) has ``auto_map`` names Python
files in the folder that transformers would import. Left at its default (``trust_remote_code=None``)
transformers *asks on stdin*, so a user answering ``y``, or any wrapper feeding stdin, runs the
folder's code. clipft's rule is "off": every transformers loading call gets
``trust_remote_code=False`` explicitly, a local folder is checked before loading (one line naming
the folder and the opt-in instead of a prompt or a misleading "not on the hub"), and its JSON
passes the one gate (:mod:`clipft.utils.file_gate`: sizes, no code-choosing keys).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from clipft.errors import ConfigError
from clipft.utils.file_gate import gate_file_config, read_json_mapping

# the files through which an HF folder can name its own code
HF_CONFIG_FILES = (
    "config.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "image_processor_config.json",
    "feature_extractor_config.json",
)
OPT_IN = "set trust_remote_code=true on that backbone (e.g. model.clip.trust_remote_code=true; a checkpoint that records it also needs --trust-checkpoint)"


class RemoteCodeRefused(ConfigError):
    """A model folder asks to run its own Python and the user did not opt in."""


def _names_code(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "auto_map" in value or any(_names_code(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_names_code(v) for v in value)
    return False


def check_hf_folder(name_or_path: str | os.PathLike | None, trust_remote_code: bool = False, what: str = "model") -> None:
    """A local HF folder: its configs pass the gate and name no code of their own (unless trusted).

    Hub ids are not checked here: the explicit ``trust_remote_code=False`` makes transformers refuse them.
    """
    if name_or_path is None or trust_remote_code:
        return
    folder = Path(os.path.expanduser(str(name_or_path)))
    if not folder.is_dir():
        return
    for name in HF_CONFIG_FILES:
        file = folder / name
        if not file.is_file():
            continue
        config = read_json_mapping(file, ConfigError)
        if _names_code(config):
            raise RemoteCodeRefused(
                f"{what} folder {str(folder)!r} asks to run its own Python ({name} has auto_map); clipft never runs a "
                f"model folder's code unless told. If you trust the folder, {OPT_IN}"
            )
        gate_file_config(config, str(file), "plain", name)


@contextlib.contextmanager
def remote_code_off() -> Iterator[None]:
    """Within this block, transformers' Auto* loaders default to ``trust_remote_code=False``.

    For third-party code that calls them without the argument (open_clip's HF text tower and
    tokenizer): transformers has no global switch, so the loaders are wrapped for the duration.
    """
    import inspect

    import transformers

    classes = [transformers.AutoConfig, transformers.AutoModel, transformers.AutoTokenizer]
    own = [cls.__dict__.get("from_pretrained") for cls in classes]  # None: inherited from a base class

    def wrap(cls: Any) -> Any:
        function = inspect.getattr_static(cls, "from_pretrained").__func__

        def from_pretrained(klass: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("trust_remote_code", False)
            return function(klass, *args, **kwargs)

        return classmethod(from_pretrained)

    try:
        for cls in classes:
            setattr(cls, "from_pretrained", wrap(cls))
        yield
    finally:
        for cls, original in zip(classes, own):
            if original is None:
                delattr(cls, "from_pretrained")
            else:
                setattr(cls, "from_pretrained", original)
