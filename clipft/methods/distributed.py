"""Cross-rank gathering for DDP/FSDP runs: contrastive negatives over the global batch, full test sets.

Lightning's strategies (``trainer=ddp``, ``ddp_spawn``, ``fsdp``) do the distribution; this
module only holds the two collectives the modules need on top of it:

* :func:`gather_with_grad` -- under DDP each rank holds ``B`` image/text features. Gathering
  them makes the contrastive loss see ``world * B`` samples, i.e. the loss a single process
  with the global batch computes. The gather is torch's differentiable
  ``torch.distributed.nn.functional.all_gather`` (Lightning's ``all_gather(sync_grads=True)``):
  its backward sums the gathered tensor's gradient over ranks (reduce-scatter, or all-to-all on
  gloo) and hands every rank its own slice. Every rank computes the same global loss, so each
  slice is ``world`` times the true gradient, and DDP's gradient *averaging* divides that back
  out: the parameters get exactly the single-process gradient (``tests/test_distributed_gather.py``).
* :func:`gather_eval_outputs` -- Lightning shards the test set with a ``DistributedSampler``
  that pads it to a multiple of the world size; this reassembles the per-sample outputs on
  every rank in dataset order with the padding dropped, so ``metrics.json`` reports every
  test image exactly once.

Both are no-ops in a single process (nothing to gather), so single-device runs pay nothing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes in the default group (1 when ``torch.distributed`` is not initialised)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_with_grad(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenate each tensor over ranks along dim 0, keeping gradients to every rank's input.

    Rank ``r``'s rows come at ``[r*B:(r+1)*B]``. Every rank must pass the same shapes: Lightning's
    ``DistributedSampler`` pads the dataset so each rank gets batches of equal size. Tensors
    that do not require grad (labels) are gathered the same way. Returns the inputs unchanged
    when there is a single process.
    """
    if world_size() == 1:
        return tensors
    # differentiable; what LightningModule.all_gather(sync_grads=True) calls
    from torch.distributed.nn.functional import all_gather

    return tuple(torch.cat(all_gather(t.contiguous()), dim=0) for t in tensors)


@torch.no_grad()
def gather_eval_outputs(
    *tensors: torch.Tensor, dataset_size: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, ...]:
    """Per-sample outputs of an unshuffled, ``DistributedSampler``-sharded pass, in dataset order.

    The sampler hands rank ``r`` the indices ``r, r + W, r + 2W, ...`` of the dataset padded
    (by wrapping around) to a multiple of ``W``. Gathering gives ``(W, n, ...)``; sample ``i``
    of rank ``r`` is dataset index ``i * W + r``, so a transpose restores dataset order and
    cutting at ``dataset_size`` drops the padding. ``device`` is where the collective runs (the
    module's device: NCCL gathers CUDA tensors only); results come back on the inputs' device.
    Returns the inputs when there is one process.
    """
    world = world_size()
    if world == 1:
        return tensors
    out = []
    for tensor in tensors:
        home = tensor.device
        tensor = tensor.to(device or home).contiguous()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor)
        stacked = torch.stack(parts, dim=1)  # (n, W, ...): row i holds sample i of every rank
        out.append(stacked.reshape(-1, *tensor.shape[1:])[:dataset_size].to(home))
    return tuple(out)


def gather_test_outputs(module: Any, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A module's per-sample test outputs (``probs``, ``targets``, ...) over the whole test set.

    Called on every rank at the end of a test epoch; a no-op in a single process.
    """
    if world_size() == 1 or not outputs:
        return outputs
    loaders = module.trainer.test_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    keys = list(outputs)
    gathered = gather_eval_outputs(*(outputs[k] for k in keys), dataset_size=len(loader.dataset), device=module.device)
    return dict(zip(keys, gathered))


def fsdp_strategy(
    wrap_layers: list[str],
    activation_checkpointing: bool = True,
    sharding_strategy: str = "FULL_SHARD",
    state_dict_type: str = "full",
    **kwargs: Any,
):
    """Lightning's ``FSDPStrategy`` with the wrap policy given as dotted class paths (YAML-friendly).

    Paths whose package is not installed (e.g. open_clip) are skipped; at least one must import.
    """
    import importlib

    from lightning.pytorch.strategies import FSDPStrategy

    from clipft.errors import ConfigError

    layers = set()
    for path in wrap_layers:
        module_name, _, attr = str(path).rpartition(".")
        try:
            layers.add(getattr(importlib.import_module(module_name), attr))
        except (ImportError, AttributeError):
            continue
    if not layers:
        raise ConfigError(f"trainer.strategy.wrap_layers: none of {list(wrap_layers)} can be imported")
    return FSDPStrategy(
        auto_wrap_policy=layers,
        activation_checkpointing_policy=layers if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        **kwargs,
    )
