"""Feature banks (clipft.callbacks.feature_bank): a row is the frozen tower's output for that view of that
image, a changed backbone gets another bank, a tampered bank is refused, validation from the bank equals
validation from pixels, and a method that trains its image tower is left alone."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

import clipft
from clipft.callbacks.feature_bank import FeatureBank, FeatureBankCallback, sample_id, view_seed, weights_hash
from clipft.data import SyntheticSignsDataModule
from clipft.errors import DataError
from clipft.methods import CLIPAdapter, CoOp, LinearHeadFineTune

SGD = {"_target_": "torch.optim.SGD", "lr": 0.05}


@pytest.fixture()
def datamodule(tmp_path):
    dm = SyntheticSignsDataModule(root=str(tmp_path / "signs"), num_classes=4, train_per_class=8, test_per_class=2,
                                  batch_size=16, dedupe="none", cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    return dm


def fit(module, dm, callback, epochs=1):
    clipft.wire(dm, module)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback], num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    return trainer


def assert_val_logits_equal(module, callback, dm):
    """The trained module's logits on the val split: from the bank's rows = from the pixels."""
    module.eval()
    module.prepare_for_inference()
    rows = callback.dataset(dm.val_samples, train=False)
    pixels = dm.image_dataset(dm.val_samples, train=False)
    with torch.no_grad():
        from_rows = module(torch.stack([rows[i][0] for i in range(len(rows))]))
        from_pixels = module(torch.stack([pixels[i][0] for i in range(len(pixels))]))
    torch.testing.assert_close(from_rows, from_pixels, atol=1e-4, rtol=1e-4)


def coop(dm, tiny_clip_dir):
    return CoOp(dm.class_names, clip={"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)},
                optimizer=SGD, n_ctx=2)


def test_a_row_is_the_towers_output_for_that_view(datamodule, tiny_clip_dir):
    module = coop(datamodule, tiny_clip_dir)
    callback = FeatureBankCallback(views=2)
    fit(module, datamodule, callback)
    samples = datamodule.train_samples[:3]
    identities = [sample_id(s.path) for s in samples]
    rows = np.stack([array[row] for array, row in callback.bank.locate(identities)])  # [3, 1 + 2, D]
    assert rows.shape[:2] == (3, 3) and callback.built_images == len(datamodule.train_samples) + len(datamodule.val_samples)
    val_rows = [array[row] for array, row in callback.bank.locate([sample_id(s.path) for s in datamodule.val_samples])]
    assert all(np.isnan(r[1:]).all() and not np.isnan(r[0]).any() for r in val_rows)  # evaluation images: view 0 only
    callback.dataset(datamodule.val_samples[:2], train=True)  # asked for as training images: their views are computed
    val_rows = [array[row] for array, row in callback.bank.locate([sample_id(s.path) for s in datamodule.val_samples[:2]])]
    assert not any(np.isnan(r).any() for r in val_rows)
    module.backbone.eval()
    with torch.no_grad():
        for view in range(3):
            pixels = []
            for sample, identity in zip(samples, identities):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(view_seed(identity, view, 0))
                    pixels.append(datamodule.image_dataset([sample], train=view > 0)[0][0])
            want = module.backbone.encode_image(torch.stack(pixels), normalize=False)
            np.testing.assert_allclose(rows[:, view], want.numpy(), atol=1e-5, rtol=1e-5)
    assert not np.allclose(rows[:, 1], rows[:, 2])  # the views are different augmentations


def test_validation_from_the_bank_equals_validation_from_pixels(datamodule, tiny_clip_dir):
    module = coop(datamodule, tiny_clip_dir)
    callback = FeatureBankCallback(views=1)
    fit(module, datamodule, callback)
    assert_val_logits_equal(module, callback, datamodule)
    assert datamodule.feature_dataset is None  # after fit, test and predict read pixels


def test_training_from_the_bank_moves_the_context_and_reuses_the_bank(datamodule, tiny_clip_dir):
    module = coop(datamodule, tiny_clip_dir)
    before = module.ctx.detach().clone()
    first = FeatureBankCallback(views=2)
    fit(module, datamodule, first, epochs=2)
    assert not torch.allclose(module.ctx, before)
    again = FeatureBankCallback(views=2)  # another seed of a sweep: same backbone, same bank, nothing computed
    fit(coop(datamodule, tiny_clip_dir), datamodule, again)
    assert again.bank.directory == first.bank.directory and again.built_images == 0


def test_a_changed_backbone_or_view_count_gets_another_bank(datamodule, tiny_clip_dir):
    module = coop(datamodule, tiny_clip_dir)
    callback = FeatureBankCallback(views=1)
    key = callback.bank_key(module, datamodule)
    with torch.no_grad():
        next(module.backbone.parameters()).add_(1e-3)
    changed = callback.bank_key(module, datamodule)
    assert changed["backbone"] != key["backbone"] and weights_hash(module.backbone) == changed["backbone"]
    root = datamodule.cache_dir / "feature_banks"
    assert FeatureBank(root, key).directory != FeatureBank(root, changed).directory
    assert FeatureBank(root, {**key, "views": 3}).directory != FeatureBank(root, key).directory


def test_a_tampered_bank_is_refused_with_one_line(tmp_path):
    bank = FeatureBank(tmp_path, {"views": 1, "backbone": "a"})
    (bank.directory / "key.json").write_text(json.dumps({"views": 1, "backbone": "b"}))
    with pytest.raises(DataError, match="another key than its name says") as info:
        FeatureBank(tmp_path, {"views": 1, "backbone": "a"})
    assert "\n" not in str(info.value)
    bank = FeatureBank(tmp_path / "x", {"views": 1, "backbone": "a"})
    bank.add(["img|1|2"], np.zeros((1, 2, 4), dtype=np.float32))
    np.save(next(bank.directory.glob("part-*.npy")), np.zeros((1, 5, 4), dtype=np.float32))  # wrong view count
    with pytest.raises(DataError, match=r"has shape \(1, 5, 4\), not \[1, 2, dim\]"):
        FeatureBank(tmp_path / "x", {"views": 1, "backbone": "a"})


def test_methods_that_train_the_image_tower_read_pixels(datamodule, tiny_clip_dir):
    clip = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}
    callback = FeatureBankCallback(views=1)
    fit(LinearHeadFineTune(datamodule.class_names, clip=clip, optimizer=SGD), datamodule, callback)
    assert callback.bank is None
    adapter = CLIPAdapter(datamodule.class_names, clip=clip, optimizer=SGD)
    fit(adapter, datamodule, callback)  # a frozen-tower method: served from the bank
    assert callback.bank is not None and callback.built_images > 0


def test_the_default_exact_mode_trains_on_pixels_and_validates_from_the_bank(datamodule, tiny_clip_dir):
    seen: list[int] = []

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(batch[0].dim())

    def run(callbacks):
        L.seed_everything(3)
        module = coop(datamodule, tiny_clip_dir)
        clipft.wire(datamodule, module)
        trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[Watch(), *callbacks], num_sanity_val_steps=0)
        trainer.fit(module, datamodule=datamodule)
        return module, trainer.callback_metrics

    exact = FeatureBankCallback(views=2, train_from_bank=False)
    with_bank, metrics = run([exact])
    assert set(seen) == {4} and exact.bank is not None  # training batches: pixels, a fresh augmentation each epoch
    val_rows = [array[row] for array, row in exact.bank.locate([sample_id(s.path) for s in datamodule.val_samples])]
    assert len(val_rows) == len(datamodule.val_samples) and not np.isnan(val_rows[0][0]).any()
    assert exact.built_images == len(datamodule.val_samples)  # no training image was banked
    seen.clear()
    without, plain_metrics = run([])
    torch.testing.assert_close(with_bank.ctx, without.ctx)  # same training
    torch.testing.assert_close(metrics["val/loss"], plain_metrics["val/loss"], atol=1e-5, rtol=1e-5)  # same validation


def test_prolip_trains_from_a_bank_of_pooled_rows_and_validates_exactly(datamodule, tiny_clip_dir):
    """ProLIP trains only the visual projection: its bank holds the tower's pooled output (the reference's saved
    pre-projection features), projected by the trained matrix at each step."""
    from clipft.methods.prolip import ProLIP

    module = ProLIP(datamodule.class_names, clip={"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)},
                    optimizer={"_target_": "torch.optim.Adam", "lr": 1e-2}, shots=4)
    before = module.projection().detach().clone()
    callback = FeatureBankCallback(views=2)
    fit(module, datamodule, callback, epochs=2)
    assert callback.bank is not None and callback.bank_key(module, datamodule)["rows"] == "pooled"
    identity = sample_id(datamodule.train_samples[0].path)
    array, row = callback.bank.locate([identity])[0]
    width = module.backbone.model.config.vision_config.hidden_size
    assert array[row].shape == (3, width)  # view 0 + 2 views of the pooled output, not the embedding
    assert not torch.allclose(module.projection(), before)  # the projection trained on the rows
    assert_val_logits_equal(module, callback, datamodule)


def test_augmented_feature_passes_read_stored_views_when_training_from_the_bank(datamodule, tiny_clip_dir):
    """LP++ (and CLAP, Tip-Adapter with augment_views > 0) take K passes of the *training* split: from a bank that
    trains from stored views, each pass reads one stored view per image (rows, not pixels through the tower)."""
    from clipft.methods.lp_plus_plus import LPPlusPlus

    module = LPPlusPlus(datamodule.class_names, clip={"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)},
                        optimizer=SGD, epochs=3, augment_views=1)
    callback = FeatureBankCallback(views=2, train_from_bank=True)
    fit(module, datamodule, callback)
    assert callback.bank is not None and callback.built_images == len(datamodule.train_samples) + len(datamodule.val_samples)
    assert torch.isfinite(module.class_logits(torch.nn.functional.normalize(torch.randn(2, module.backbone.embed_dim), dim=-1))).all()


def test_text_only_tuning_trains_from_the_bank_with_its_image_tower_frozen(datamodule, tiny_clip_dir):
    """CLIP-SVD, LN-tuning/BitFit and LoRA of the text tower alone leave the image tower frozen as a whole (eval
    mode: a CNN's BatchNorm statistics stay), so a bank serves it; tuning the image tower, or Lipsum-FT's
    pixel-reading term, keeps pixels."""
    from clipft.methods import ContrastiveFineTune
    from clipft.methods.clip_svd import CLIPSVD

    clip = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}
    adamw = {"_target_": "torch.optim.AdamW", "lr": 5e-2}
    module = CLIPSVD(datamodule.class_names, clip=clip, optimizer=adamw, svd_towers=["text"])
    image_before = {k: v.clone() for k, v in module.backbone.image_tower.state_dict().items()}
    text_before = [p.detach().clone() for p in module.parameters() if p.requires_grad]
    callback = FeatureBankCallback(views=2)
    fit(module, datamodule, callback, epochs=2)
    assert module.freeze_image_tower and not module.backbone.image_tower.training
    assert callback.bank is not None and callback.built_images == len(datamodule.train_samples) + len(datamodule.val_samples)
    assert any(not torch.equal(p, q) for p, q in zip([p for p in module.parameters() if p.requires_grad], text_before))
    for key, value in module.backbone.image_tower.state_dict().items():
        torch.testing.assert_close(value, image_before[key])
    assert_val_logits_equal(module, callback, datamodule)
    both = FeatureBankCallback(views=2)
    fit(CLIPSVD(datamodule.class_names, clip=clip, optimizer=adamw), datamodule, both)
    assert both.bank is None  # the image tower's singular values train: pixels
    lipsum = FeatureBankCallback(views=2)
    fit(ContrastiveFineTune(datamodule.class_names, clip=clip, optimizer=adamw, freeze_image_tower=True, lipsum_weight=1.0),
        datamodule, lipsum)
    assert lipsum.bank is None  # Lipsum-FT runs the pretrained tower on the batch's pixels


def test_text_only_promptsrc_trains_from_the_bank_and_image_prompts_keep_pixels(datamodule, tiny_clip_dir):
    """PromptSRC without image prompts runs the frozen image tower, which a bank serves (its image L1 term is 0 then);
    with image prompts the tower reads prompt tokens, and pixels stay."""
    from clipft.methods.promptsrc import PromptSRC

    clip = {"_target_": "clipft.models.HFCLIPBackbone", "name_or_path": str(tiny_clip_dir)}
    text_only = PromptSRC(datamodule.class_names, clip=clip, optimizer=SGD, prompt_depth_text=2, prompt_depth_image=0,
                          gpa_mean=None)
    before = {n: p.detach().clone() for n, p in text_only.learned_parameters()}
    callback = FeatureBankCallback(views=2)
    fit(text_only, datamodule, callback, epochs=2)
    assert callback.bank is not None and callback.built_images > 0
    assert all(not torch.equal(p, before[n]) for n, p in text_only.learned_parameters())
    assert_val_logits_equal(text_only, callback, datamodule)
    weight, bias = text_only.linear_head()  # the learned class text over the frozen tower: a linear head to export
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        exported = text_only.backbone.encode_image(images) @ weight.t() + bias
        torch.testing.assert_close(exported, text_only(images), atol=1e-4, rtol=1e-4)
    prompted = FeatureBankCallback(views=2)
    fit(PromptSRC(datamodule.class_names, clip=clip, optimizer=SGD, prompt_depth_text=2, prompt_depth_image=1,
                  gpa_mean=None), datamodule, prompted)
    assert prompted.bank is None


def test_the_test_pass_reads_the_bank_and_scores_as_pixels_do(datamodule, tiny_clip_dir):
    """``test_from_bank``: the test split's view-0 rows, keyed by the restored weights, give the pixels' probabilities;
    a second run over the same backbone encodes no test image again; after the test, loaders read pixels."""
    module = coop(datamodule, tiny_clip_dir)
    callback = FeatureBankCallback(views=1)
    trainer = fit(module, datamodule, callback)
    built = callback.built_images
    trainer.test(module, datamodule=datamodule, verbose=False)
    from_bank = module.test_outputs["probs"].clone()
    assert callback.built_images == built + len(datamodule.test_samples) and datamodule.feature_dataset is None
    rows = callback.bank.locate([sample_id(s.path) for s in datamodule.test_samples])
    assert all(not np.isnan(array[row][0]).any() for array, row in rows)

    def test_with(*callbacks):
        L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                  callbacks=list(callbacks)).test(module, datamodule=datamodule, verbose=False)

    test_with()  # pixels
    torch.testing.assert_close(from_bank, module.test_outputs["probs"], atol=1e-5, rtol=1e-5)
    again = FeatureBankCallback(views=1)
    test_with(again)
    assert again.built_images == 0 and again.bank.directory == callback.bank.directory
    off = FeatureBankCallback(views=1, test_from_bank=False)
    test_with(off)
    assert off.bank is None
