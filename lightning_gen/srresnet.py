"""SRResNet: the generator of Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative
Adversarial Network" (CVPR 2017), trained alone with the mean squared error.

The network works on the low-resolution image itself (`lightning_gen.nn.sr.SRResNet`: 9x9 conv, residual blocks
with batch norm and PReLU, a long skip, sub-pixel (PixelShuffle) upsampling by `scale`, 9x9 conv to RGB), so it
is cheaper than SRCNN at the same depth. Its checkpoint initialises SRGAN's generator.

`validate`/`test` report PSNR and SSIM per evaluation set beside bicubic's and save (bicubic | SRResNet | HR)
strips; `predict` upscales `--data.predict_root`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lightning_gen.core.checks import ConfigError, check_learning_rates
from lightning_gen.core.optim import adam
from lightning_gen.core.technique import Technique
from lightning_gen.metrics.sr import SREvaluation, SuperResolutionEvaluation
from lightning_gen.nn.norm import Norm
from lightning_gen.nn.sr import SRResNet as SRResNetNet


class SRResNet(SuperResolutionEvaluation, Technique):
    """Ledig et al.'s SRResNet, trained with MSE.

    Args:
        scale: upscaling factor (2, 3 or 4; must equal the datamodule's).
        channels: feature channels (64 in the paper).
        num_blocks: residual blocks (16 in the paper).
        norm: normalisation in the residual blocks: `batch` (the paper's), `none` (EDSR's: Lim et al. 2017 dropped
            it), `layer`, `instance` or `group` (see `lightning_gen.nn.norm`).
        residual: add the bicubic upsampling of the input to the output, the network starting as bicubic (not in
            the paper; it makes short training runs beat bicubic).
        lr: Adam's learning rate (1e-4 in the paper).
        channel: evaluation on the luminance (`y`, the literature's tables) or on `rgb`.
        num_strips: images per evaluation set shown as (bicubic | SRResNet | HR) strips.
        batch_norm: deprecated, replaced by `norm` (`true` is `norm: batch`, `false` is `norm: none`); still read so
            that checkpoints and configs from before `norm` keep working.
    """

    def __init__(
        self,
        scale: Literal[2, 3, 4] = 4,
        channels: int = 64,
        num_blocks: int = 16,
        norm: Norm = "batch",
        residual: bool = False,
        lr: float = 1e-4,
        channel: Literal["y", "rgb"] = "y",
        num_strips: int = 2,
        batch_norm: bool | None = None,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        if batch_norm is not None:  # the option before `norm` (norm then has its default, batch)
            if norm not in ("batch", "batch" if batch_norm else "none"):
                raise ConfigError(f"batch_norm={batch_norm} (deprecated) contradicts norm={norm!r}; give norm alone.")
            norm = "batch" if batch_norm else "none"
        self.save_hyperparameters(ignore=["batch_norm"])
        self.hparams.norm = norm
        if channels < 1 or num_blocks < 0 or lr <= 0 or scale not in (2, 3, 4):
            raise ConfigError(f"need channels >= 1, num_blocks >= 0, lr > 0 and scale 2, 3 or 4; got {channels}, "
                              f"{num_blocks}, {lr}, {scale}.")
        self.evaluation = SREvaluation(channel, border=scale, num_strips=num_strips)

    def build(self) -> None:
        hp = self.hparams
        self.generator = SRResNetNet(hp.scale, hp.channels, hp.num_blocks, hp.norm, hp.residual)

    def forward(self, lr: Tensor) -> Tensor:
        return self.generator(lr)  # (B, 3, h, w) -> (B, 3, scale*h, scale*w)

    def upscale(self, batch: dict[str, Tensor]) -> Tensor:
        return self(batch["lr"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self, self.parameters(), self.hparams.lr)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.mse_step(batch)  # MSE of the upscaled image against HR
