"""Optimizers shared by the techniques."""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch
from torch import nn

from lightning_gen.core.lightning_private import attached_trainer


def adam(
    module: L.LightningModule,
    params: Iterable[nn.Parameter],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    clips_gradients: bool = False,
) -> torch.optim.Adam:
    """`torch.optim.Adam` for `module`'s `configure_optimizers`, with the fused kernel where it changes nothing
    but speed: every parameter a floating-point CPU or CUDA tensor (Lightning builds optimizers after moving the
    model) and no gradient scaler (under `16-mixed` a fused optimizer unscales inside its step, so hooks and
    gradient clipping would see scaled gradients). On CPU the fused step is about 5 times faster than the default
    per-tensor loop: a tenth of a training step of the small MNIST networks. A technique that clips its gradients
    under automatic optimization says so (`clips_gradients`): Lightning's mixed-precision plugins refuse to clip for
    an optimizer that unscales inside its step, which the fused one does."""
    params = list(params)
    trainer = attached_trainer(module)
    scaled = trainer is not None and getattr(trainer.precision_plugin, "scaler", None) is not None
    fused = not scaled and not clips_gradients and bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    )
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused or None)
