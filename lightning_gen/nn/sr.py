"""Super-resolution networks of Ledig et al. (2017), shared by SRResNet and SRGAN: the SRResNet generator and the
SRGAN discriminator. Both normalise with batch norm, as the paper; `norm` chooses another (`lightning_gen.nn.norm`)."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_gen.nn.norm import Norm, make_norm


class ResidualBlock(nn.Module):
    """conv3x3 -> norm -> PReLU -> conv3x3 -> norm, plus the input (norm: batch norm in the paper)."""

    def __init__(self, channels: int, norm: Norm = "batch") -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), make_norm(norm, channels),
                                  nn.PReLU(channels), nn.Conv2d(channels, channels, 3, padding=1),
                                  make_norm(norm, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def upsampler(channels: int, scale: int) -> nn.Sequential:
    """Sub-pixel upsampling (Shi et al. 2016): per factor 2 (or one factor 3), a conv to r^2 x channels,
    PixelShuffle(r), PReLU. `(B, C, h, w)` -> `(B, C, scale*h, scale*w)`."""
    factors = [3] if scale == 3 else [2] * int(math.log2(scale))
    if scale not in (2, 3, 4, 8):
        raise ValueError(f"scale must be 2, 3, 4 or 8; got {scale}")
    layers: list[nn.Module] = []
    for r in factors:
        layers += [nn.Conv2d(channels, channels * r * r, 3, padding=1), nn.PixelShuffle(r), nn.PReLU(channels)]
    return nn.Sequential(*layers)


class SRResNet(nn.Module):
    """Ledig et al.'s generator: 9x9 conv + PReLU, `num_blocks` residual blocks, conv + norm with a skip from before
    the blocks, sub-pixel upsampling by `scale`, 9x9 conv to RGB. `(B, 3, h, w)` -> `(B, 3, scale*h, scale*w)`,
    both in [-1, 1] (the output is not squashed; callers clamp for display).

    `residual=True` adds the bicubic upsampling of the input to the output (the global residual of VDSR; not in
    Ledig et al.), and the last conv starts at zero, so the untrained network is bicubic interpolation and training
    only learns the missing detail."""

    def __init__(self, scale: int = 4, channels: int = 64, num_blocks: int = 16, norm: Norm = "batch",
                 residual: bool = False) -> None:
        super().__init__()
        self.scale, self.residual = scale, residual
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU(channels))
        self.blocks = nn.Sequential(*[ResidualBlock(channels, norm) for _ in range(num_blocks)])
        self.fuse = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), make_norm(norm, channels))
        self.up = upsampler(channels, scale)
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)
        if residual:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, lr: Tensor) -> Tensor:
        x = self.head(lr)  # (B, C, h, w)
        x = x + self.fuse(self.blocks(x))
        out = self.tail(self.up(x))  # (B, 3, scale*h, scale*w)
        if self.residual:
            out = out + F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


class SRDiscriminator(nn.Module):
    """Ledig et al.'s discriminator: eight 3x3 convs (64, 64/2, 128, 128/2, 256, 256/2, 512, 512/2) with LeakyReLU
    0.2 and norm (not on the first; batch norm in the paper), then (here) a 6x6 adaptive average pool so any crop size
    works, dense 1024, LeakyReLU, dense 1: one real/fake logit per image."""

    def __init__(self, channels: int = 64, norm: Norm = "batch") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, (mult, stride) in enumerate([(1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2), (8, 1), (8, 2)]):
            cout = channels * mult
            layers.append(nn.Conv2d(cin, cout, 3, stride, padding=1))
            if i > 0:
                layers.append(make_norm(norm, cout))
            layers.append(nn.LeakyReLU(0.2))
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(6))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * 36, 1024), nn.LeakyReLU(0.2), nn.Linear(1024, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images)).squeeze(1)  # (B,) logits
