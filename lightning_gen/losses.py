"""Losses as pure tensor functions. Every GAN loss takes logits (never probabilities), so it is safe under autocast."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

GANLoss = Literal["bce", "lsgan", "hinge"]


def discriminator_loss(
    real_logits: Tensor, fake_logits: Tensor, mode: GANLoss = "bce", label_smoothing: float = 0.0
) -> Tensor:
    """Discriminator loss on real and generated logits.

    - `bce`: -log sigmoid(real) - log(1 - sigmoid(fake)), the real target being `1 - label_smoothing`
      (one-sided label smoothing, Salimans et al. 2016).
    - `lsgan`: 0.5 * (real - target)^2 + 0.5 * fake^2 (Mao et al. 2017, a=0, b=target).
    - `hinge`: relu(1 - real) + relu(1 + fake) (Lim & Ye 2017; Miyato et al. 2018). No label smoothing.
    Each term is a mean over the batch.
    """
    target = 1.0 - label_smoothing
    if mode == "bce":
        real = F.binary_cross_entropy_with_logits(real_logits, real_logits.new_full(real_logits.shape, target))
        fake = F.binary_cross_entropy_with_logits(fake_logits, fake_logits.new_zeros(fake_logits.shape))
        return real + fake
    if mode == "lsgan":
        return 0.5 * ((real_logits.float() - target) ** 2).mean() + 0.5 * (fake_logits.float() ** 2).mean()
    if mode == "hinge":
        if label_smoothing:
            raise ValueError("label_smoothing has no meaning for the hinge loss; set it to 0 or use bce/lsgan.")
        return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()
    raise ValueError(f"unknown GAN loss {mode!r}; choose one of bce, lsgan, hinge")


def generator_loss(fake_logits: Tensor, mode: GANLoss = "bce") -> Tensor:
    """Generator loss on the discriminator's logits for generated images.

    - `bce`: the non-saturating loss -log sigmoid(fake).
    - `lsgan`: 0.5 * (fake - 1)^2.
    - `hinge`: -fake.
    """
    if mode == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, fake_logits.new_ones(fake_logits.shape))
    if mode == "lsgan":
        return 0.5 * ((fake_logits.float() - 1.0) ** 2).mean()
    if mode == "hinge":
        return -fake_logits.float().mean()
    raise ValueError(f"unknown GAN loss {mode!r}; choose one of bce, lsgan, hinge")
