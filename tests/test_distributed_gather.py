"""Cross-rank gathering: 2 gloo processes must reproduce the single-process global-batch numbers."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clipft.methods.distributed import gather_eval_outputs, gather_with_grad, world_size
from clipft.methods.losses import contrastive_loss

WORLD = 2
LABELS = torch.tensor([0, 1, 1, 2, 0, 3, 2, 1])  # same-class pairs straddle the two ranks
NUM_CLASSES = 4


def _model_and_batch():
    torch.manual_seed(0)
    image_encoder = torch.nn.Linear(6, 5)
    text_table = torch.nn.Embedding(NUM_CLASSES, 5)
    log_scale = torch.nn.Parameter(torch.tensor(1.5))
    images = torch.randn(len(LABELS), 6)
    return image_encoder, text_table, log_scale, images


def _loss(image_encoder, text_table, log_scale, images, labels, gather: bool):
    image = torch.nn.functional.normalize(image_encoder(images), dim=-1)
    text = torch.nn.functional.normalize(text_table(labels), dim=-1)
    if gather:
        image, text, labels = gather_with_grad(image, text, labels)
    return contrastive_loss(image, text, labels, log_scale.exp(), "multi_positive"), len(labels)


def _reference():
    """Loss and gradients of one process holding the whole global batch."""
    enc, table, scale, images = _model_and_batch()
    loss, _ = _loss(enc, table, scale, images, LABELS, gather=False)
    params = [*enc.parameters(), *table.parameters(), scale]
    return loss.detach(), torch.autograd.grad(loss, params)


def _worker(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        assert world_size() == WORLD
        enc, table, scale, images = _model_and_batch()
        shard = slice(rank * 4, (rank + 1) * 4)
        loss, seen = _loss(enc, table, scale, images[shard], LABELS[shard], gather=True)
        assert seen == len(LABELS), "the loss must see the global batch"
        params = [*enc.parameters(), *table.parameters(), scale]
        grads = list(torch.autograd.grad(loss, params))
        for g in grads:  # what DDP does to every parameter gradient
            dist.all_reduce(g)
            g /= WORLD
        ref_loss, ref_grads = _reference()
        torch.testing.assert_close(loss.detach(), ref_loss)
        for g, ref in zip(grads, ref_grads):
            torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-6)

        # test-set reassembly: 7 samples padded to 8 by DistributedSampler(shuffle=False)
        sampler = torch.utils.data.DistributedSampler(range(7), num_replicas=WORLD, rank=rank, shuffle=False)
        local = torch.tensor(list(sampler), dtype=torch.float32)
        (ordered,) = gather_eval_outputs(local[:, None].repeat(1, 3), dataset_size=7)
        torch.testing.assert_close(ordered, torch.arange(7.0)[:, None].repeat(1, 3))
    finally:
        dist.destroy_process_group()


def test_gathered_contrastive_loss_matches_single_process_global_batch(tmp_path):
    # spawn, not fork: forking a process whose OpenMP / gloo threads already ran (any earlier test
    # did) can deadlock the children; a spawned interpreter pays a few seconds of imports instead.
    mp.start_processes(_worker, args=(str(tmp_path / "rendezvous"),), nprocs=WORLD, join=True, start_method="spawn")


def test_single_process_gather_is_identity():
    x = torch.randn(3, 2, requires_grad=True)
    (y,) = gather_with_grad(x)
    assert y is x
    (z,) = gather_eval_outputs(x.detach(), dataset_size=2)
    assert z.shape == (3, 2), "with one process nothing is cut: the loader has no padding"


def test_contrastive_loss_of_halves_differs_from_global(tmp_path):
    """The check above is not vacuous: losses of the two halves do not average to the global one."""
    enc, table, scale, images = _model_and_batch()
    full, _ = _loss(enc, table, scale, images, LABELS, gather=False)
    halves = [_loss(enc, table, scale, images[s], LABELS[s], gather=False)[0] for s in (slice(0, 4), slice(4, 8))]
    assert not torch.allclose(full, torch.stack(halves).mean(), atol=1e-4)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
