"""Example backbone (docs/extending.md): a conv image tower and a bag-of-characters text tower.

A backbone implements clipft.models.contract.VisionLanguageBackbone (TokenEmbeddingPath gives
encode_text_embeddings from token_embedding()) and registers its class in clipft.registry (kind "backbone"); every CLIP method then trains and evaluates it unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clipft import registry
from clipft.models.contract import TokenEmbeddingPath

VOCAB = " abcdefghijklmnopqrstuvwxyz.,"


@registry.register("backbone", tiny=lambda tmp: BagOfWordsCLIP())  # checkpoints may name it; contract-tested
class BagOfWordsCLIP(TokenEmbeddingPath, nn.Module):
    def __init__(self, embed_dim: int = 16, image_size: int = 32) -> None:
        super().__init__()
        self.visual = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.visual_projection = nn.Linear(8, embed_dim, bias=False)
        self.words = nn.Embedding(len(VOCAB) + 1, 12, padding_idx=0)
        self.text_projection = nn.Linear(12, embed_dim, bias=False)
        self._logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.embed_dim, self.is_pretrained = embed_dim, True
        self.preprocessing = {"image_size": image_size, "mean": [0.5] * 3, "std": [0.5] * 3}

    @property
    def logit_scale(self):
        return self._logit_scale

    @property
    def logit_bias(self):
        return None

    @property
    def image_tower(self):
        return self.visual

    @property
    def text_tower(self):
        return self.words

    def tokenize(self, texts, device=None):
        ids = [[VOCAB.find(c) + 1 for c in t.lower()][:32] or [0] for t in texts]
        out = torch.zeros(len(ids), max(map(len, ids)), dtype=torch.long)
        for row, seq in enumerate(ids):
            out[row, : len(seq)] = torch.tensor(seq)
        tokens = {"input_ids": out, "attention_mask": (out > 0).long()}
        return {k: v.to(device) for k, v in tokens.items()} if device is not None else tokens

    def encode_image(self, pixel_values, normalize=True):
        feats = self.visual_projection(self.visual(pixel_values))
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    def encode_text(self, input_ids, attention_mask=None, normalize=True):
        mask = (input_ids > 0).unsqueeze(-1).float() if attention_mask is None else attention_mask.unsqueeze(-1).float()
        feats = self.text_projection((self.words(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1))
        return nn.functional.normalize(feats, dim=-1) if normalize else feats

    def token_embedding(self):
        return self.words

    def image_parameters(self):
        return [*self.visual.parameters(), *self.visual_projection.parameters()]

    def text_parameters(self):
        return [*self.words.parameters(), *self.text_projection.parameters()]

    def projection_parameters(self):
        return [*self.visual_projection.parameters(), *self.text_projection.parameters()]
