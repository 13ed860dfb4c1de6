"""Method constructors declare only their own arguments; the base records every argument as a hyper-parameter.

Each method's ``__init__`` names its own arguments (keyword-only) and passes the base constructor's on through
``*args``/``**kwargs`` (``passes_on``). Checkpoints rebuild a module from ``hparams`` (``load_module``), so the
recorded keys must stay the full constructor arguments, base defaults included, and be accepted again.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from clipft import registry
from clipft.errors import ConfigError
from clipft.utils.safe_targets import UntrustedCheckpointError, check_arguments

CLASSES = ["stop", "yield", "keep left"]
CLIP = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": None, "config": {"projection_dim": 8}}
SGD = {"_target_": "torch.optim.SGD", "lr": 0.01}
TINY = {  # what a tiny backbone or an offline run needs beyond the defaults
    "CNNTransfer": {"backbone": {"_target_": "clipft.models.build_torchvision_backbone", "name": "mobilenet_v3_small", "pretrained": False}},
    "MaPLe": {"prompt_depth": 1},
    "PromptSRC": {"prompt_depth_text": 1, "prompt_depth_image": 1},
    "ProLIP": {"shots": 4},
}
METHODS = sorted(n for n, e in registry.entries("method").items() if e.source == "clipft")


def build(name: str, **overrides):
    cls = registry.entries("method")[name].load()
    kwargs = {"optimizer": SGD, **TINY.get(name, {}), **overrides}
    if "clip" in inspect.signature(cls).parameters and name != "CNNTransfer":
        kwargs.setdefault("clip", CLIP)
    torch.manual_seed(0)
    return cls(CLASSES, **kwargs)


@pytest.mark.parametrize("name", METHODS)
def test_hparams_are_the_full_constructor_arguments_and_rebuild_the_module(name):
    module = build(name)
    cls = type(module)
    hparams = dict(module.hparams)
    assert list(hparams) == list(inspect.signature(cls).parameters)  # own and passed-on arguments, defaults included
    if cls.passes_on:
        own = {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")}
        assert set(cls.passes_on).isdisjoint(own) and set(cls.passes_on) <= set(hparams)
    rebuilt = cls(**hparams)  # what load_module does with a checkpoint's hyper_parameters
    assert dict(rebuilt.hparams) == hparams


def test_passed_on_arguments_are_recorded_as_given_or_as_the_base_default():
    module = build("CLIPAdapter", label_smoothing=0.1, ratio=0.5)
    assert module.hparams["label_smoothing"] == 0.1 and module.label_smoothing == 0.1 and module.ratio == 0.5
    assert build("CLIPAdapter").hparams["scheduler"] is None  # not given: CLIPMethod's default
    kg = build("KgCoOp", n_ctx=2, ctx_init=None)  # two levels down: KgCoOp -> CoOp -> CLIPMethod
    assert (kg.hparams["n_ctx"], kg.hparams["class_specific"], kg.hparams["prompts"]) == (2, False, None)
    assert kg.n_ctx == build("KgCoOp", n_ctx=2, ctx_init=None, kg_weight=1.0).n_ctx < build("KgCoOp", ctx_init=None).n_ctx
    svd = build("CLIPSVD")  # fixes ContrastiveFineTune's sim_weight: not one of its arguments
    assert "sim_weight" not in svd.hparams and svd.sim_weight == 0.0


def test_positional_class_names_still_reach_the_base():
    cls = registry.get("method", "CLIPAdapter")
    module = cls(CLASSES, CLIP, SGD)
    assert module.class_names == CLASSES and module.hparams["class_names"] == CLASSES
    assert module.hparams["clip"] == CLIP and module.hparams["optimizer"] == SGD


@pytest.mark.parametrize("name, argument", [("CLIPAdapter", "layer_decay"), ("PromptSRC", "n_ctx"), ("CLIPSVD", "lipsum_weight")])
def test_a_base_argument_the_method_does_not_take_is_refused(name, argument):
    """Passing on is not blanket: MaPLe, PromptSRC... fix or do not support some base arguments."""
    with pytest.raises(ConfigError, match=argument):
        build(name, **{argument: 1})
    cls = registry.get("method", name)
    with pytest.raises(UntrustedCheckpointError, match="do not fit"):  # checkpoints are checked before building
        check_arguments(cls, {"class_names": CLASSES, argument: 1}, "model", "x.ckpt", partial=True)


def test_check_arguments_sees_the_passed_on_arguments():
    with pytest.raises(ConfigError, match="label_smoothing"):
        build("TaskRes", label_smoothing=1.5)
    with pytest.raises(ConfigError, match="optimizer.lr"):
        build("CoCoOp", optimizer={"_target_": "torch.optim.SGD", "lr": -1})


def test_a_subclass_with_an_explicit_constructor_records_its_own_arguments():
    """A plugin's method written the old way (every argument named) does not inherit its parent's passes_on."""
    from clipft.methods import CoOp

    class Explicit(CoOp, abstract=True):
        def __init__(self, class_names, clip, optimizer, n_ctx: int = 2, scale: float = 1.0) -> None:
            super().__init__(class_names, clip, optimizer, n_ctx=n_ctx, ctx_init=None)
            self.scale = scale

    module = Explicit(CLASSES, CLIP, SGD, scale=2.0)
    assert dict(module.hparams) == {"class_names": CLASSES, "clip": CLIP, "optimizer": SGD, "n_ctx": 2, "scale": 2.0}
    assert list(inspect.signature(Explicit).parameters) == ["class_names", "clip", "optimizer", "n_ctx", "scale"]
