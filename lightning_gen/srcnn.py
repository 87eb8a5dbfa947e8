"""SRCNN: Dong, Loy, He & Tang, "Image Super-Resolution Using Deep Convolutional Networks" (ECCV 2014, TPAMI 2016).

The low-resolution image is first upsampled to the target size by bicubic interpolation; three convolutions then
restore it: patch extraction (9x9, 64 filters), non-linear mapping (5x5 here as in the paper's best 9-5-5
variant, or 1x1 for the original 9-1-5, 32 filters) and reconstruction (5x5), ReLU between, trained with the mean
squared error. Padding keeps the size (replicated borders; the paper's valid convolutions lose 6-8 pixels a side,
which the evaluation's border shave mostly covers). `residual: true` adds the bicubic input to the output (VDSR's
residual learning: same network, much faster to train).

`validate`/`test` report PSNR and SSIM per evaluation set (Y channel of BT.601 with `scale` pixels shaved, or RGB),
beside the bicubic baseline's, and save strips of (bicubic | SRCNN | HR) crops; `predict` upscales
`--data.predict_root`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lightning_gen.core.checks import ConfigError, check_learning_rates
from lightning_gen.core.optim import adam
from lightning_gen.core.technique import Technique
from lightning_gen.metrics.sr import SREvaluation, SuperResolutionEvaluation


class SRCNN(SuperResolutionEvaluation, Technique):
    """Dong et al.'s three-layer super-resolution network, on bicubic-upsampled input.

    Args:
        scale: upscaling factor (must equal the datamodule's).
        features: filters of the first two layers (64, 32 in the paper).
        kernels: kernel sizes of the three layers (9-5-5; the original 9-1-5 is `[9, 1, 5]`).
        residual: predict the difference from the bicubic input (faster training) instead of the image.
        lr: Adam's learning rate (the paper used SGD with 1e-4, 1e-5 in the last layer).
        channel: evaluation on the luminance (`y`, the literature's tables) or on `rgb`.
        num_strips: images per evaluation set shown as (bicubic | SRCNN | HR) strips.
    """

    def __init__(
        self,
        scale: Literal[2, 3, 4] = 3,
        features: tuple[int, int] = (64, 32),
        kernels: tuple[int, int, int] = (9, 5, 5),
        residual: bool = False,
        lr: float = 1e-4,
        channel: Literal["y", "rgb"] = "y",
        num_strips: int = 2,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        self.save_hyperparameters()
        if any(k % 2 == 0 or k < 1 for k in kernels) or min(features) < 1 or lr <= 0:
            raise ConfigError(f"kernels must be odd and positive, features positive and lr > 0; got {kernels}, "
                              f"{features}, {lr}.")
        self.evaluation = SREvaluation(channel, border=scale, num_strips=num_strips)

    def build(self) -> None:
        (k1, k2, k3), (f1, f2) = self.hparams.kernels, self.hparams.features
        self.net = nn.Sequential(
            nn.Conv2d(3, f1, k1, padding=k1 // 2, padding_mode="replicate"), nn.ReLU(),
            nn.Conv2d(f1, f2, k2, padding=k2 // 2, padding_mode="replicate"), nn.ReLU(),
            nn.Conv2d(f2, 3, k3, padding=k3 // 2, padding_mode="replicate"),
        )

    def forward(self, bicubic: Tensor) -> Tensor:
        """`(B, 3, H, W)` bicubic-upsampled image in [-1, 1] -> restored image of the same size."""
        out = self.net(bicubic)
        return bicubic + out if self.hparams.residual else out

    def upscale(self, batch: dict[str, Tensor]) -> Tensor:
        return self(batch["bicubic"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self, self.parameters(), self.hparams.lr)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.mse_step(batch)  # MSE of the upscaled image against HR
