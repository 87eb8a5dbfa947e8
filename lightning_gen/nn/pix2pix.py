"""pix2pix networks (Isola et al. 2017): the U-Net generator and the conditional PatchGAN discriminator.

U-Net: `num_downs` stride-2 4x4 convolutions (LeakyReLU 0.2; normalisation (`norm`) on all but the first and the
innermost) take an image down to `H / 2**num_downs`; as many stride-2 transposed convolutions (ReLU,
normalisation) bring it back, each taking the mirror encoder layer's output concatenated to its input (the skip
connections), ending in tanh. Widths are `features * min(2**depth, 8)`. Dropout (p = `dropout`) sits in the
decoder layers at depths 4 .. num_downs-2, where the width has reached `8 * features`: the three layers nearest
the bottleneck for 256x256 (num_downs = 8), as in the paper, where it is the generator's only noise source.

PatchGAN: `n_layers` stride-2 4x4 convolutions (LeakyReLU 0.2, normalisation on all but the first), one stride-1
4x4 convolution, and a stride-1 4x4 convolution to one logit per patch. Each logit sees a receptive field of
16 (n_layers 1), 70 (3) or 286 (5) pixels; the 1x1 PixelGAN uses 1x1 convolutions instead.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_gen.core.checks import ConfigError
from lightning_gen.nn.dcgan import dcgan_init
from lightning_gen.nn.norm import Norm, make_norm

ReceptiveField = Literal[1, 16, 70, 286]
PATCH_LAYERS: dict[int, int] = {16: 1, 70: 3, 286: 5}  # receptive field -> stride-2 layers


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """`make_norm(kind, channels)`, with instance norm without affine parameters or running statistics (as the
    reference code)."""
    return make_norm(kind, channels, affine=kind != "instance")


def conv_bias(kind: Norm) -> bool:
    """Whether a convolution before a `kind` normalisation needs a bias: not before batch norm (its shift is the
    bias) nor before the affine group and layer norms (theirs is); yes before the non-affine instance norm or none,
    as the reference code."""
    return kind in ("instance", "none")


def unet_depth(height: int, width: int, num_downs: int | None = None) -> int:
    """The U-Net's number of downsamplings: `log2(side)` for a square power-of-two side (256 -> 8, down to a 1x1
    bottleneck), or `num_downs` when given. Raises `ConfigError` naming the fix when the size cannot be halved
    that many times."""
    if num_downs is None:
        if height != width or height < 2 or height & (height - 1):
            raise ConfigError(
                f"the U-Net's depth is log2 of the image side, which needs a square power-of-two size; got "
                f"{height}x{width}. Set `crop_size` to 256 (or 32, 64, 128, 512), or set the model's `num_downs` "
                "so that both sides divide by 2**num_downs."
            )
        return int(math.log2(height))
    if num_downs < 1 or height % 2**num_downs or width % 2**num_downs:
        raise ConfigError(
            f"num_downs={num_downs} halves the image {num_downs} times, so both sides must divide by "
            f"{2 ** max(num_downs, 0)}; got {height}x{width}. Lower num_downs or change the crop size."
        )
    return num_downs


class UNet(nn.Module):
    """`(B, in_channels, H, W)` -> `(B, out_channels, H, W)` in [-1, 1], H and W divisible by 2**num_downs.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output image.
        num_downs: stride-2 downsamplings (8 for 256x256: down to 1x1).
        features: width of the first layer (64 in the paper).
        norm: `batch` (the paper's), `instance`, `layer`, `group` or `none` (`lightning_gen.nn.norm`).
        dropout: dropout probability in the decoder layers at depths 4 .. num_downs-2 (0: none).
    """

    def __init__(self, in_channels: int, out_channels: int, num_downs: int, features: int = 64, norm: Norm = "batch",
                 dropout: float = 0.5) -> None:
        super().__init__()
        if num_downs < 1 or features < 1 or not 0.0 <= dropout < 1.0:
            raise ConfigError("UNet needs num_downs >= 1, features >= 1 and 0 <= dropout < 1.")
        bias = conv_bias(norm)  # no bias where the normalisation has its own shift
        widths = [features * min(2**d, 8) for d in range(num_downs)]  # output width of the encoder layer at depth d
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        for d in range(num_downs):
            c_in = in_channels if d == 0 else widths[d - 1]
            layers: list[nn.Module] = [] if d == 0 else [nn.LeakyReLU(0.2, inplace=True)]
            layers.append(nn.Conv2d(c_in, widths[d], 4, 2, 1, bias=bias or d in (0, num_downs - 1)))
            if 0 < d < num_downs - 1:
                layers.append(norm_layer(norm, widths[d]))
            self.down.append(nn.Sequential(*layers))  # (B, c_in, h, w) -> (B, widths[d], h/2, w/2)
        for d in range(num_downs):
            c_in = widths[d] if d == num_downs - 1 else 2 * widths[d]  # below the bottleneck: + the skip
            c_out = out_channels if d == 0 else widths[d - 1]
            layers = [nn.ReLU(inplace=True), nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias or d == 0)]
            layers.append(nn.Tanh() if d == 0 else norm_layer(norm, c_out))
            if dropout and 4 <= d <= num_downs - 2:
                layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))  # (B, c_in, h, w) -> (B, c_out, 2h, 2w)
        self.num_downs = num_downs
        dcgan_init(self)  # N(0, 0.02) weights, as the reference code

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = self.up[-1](skips.pop())  # the bottleneck, (B, 8f, H/2^n, W/2^n) -> (B, 8f, H/2^(n-1), ...)
        for layer in reversed(self.up[:-1]):
            x = layer(torch.cat([x, skips.pop()], dim=1))  # concatenate the mirror encoder layer's output
        return x


class PatchGAN(nn.Module):
    """Conditional PatchGAN: `(B, in_channels, H, W)` (input and output images concatenated) -> `(B, 1, h, w)`
    logits, one per patch of `receptive_field` pixels. For 256x256: 30x30 (70), 126x126 (16), 6x6 (286), 256x256
    (1).

    Args:
        in_channels: channels of the input image plus channels of the output image.
        receptive_field: 1 (PixelGAN), 16, 70 (the paper's default) or 286 (ImageGAN at 256x256).
        features: width of the first layer (64 in the paper).
        norm: `batch` (the paper's), `instance`, `layer`, `group` or `none` (`lightning_gen.nn.norm`).
    """

    def __init__(self, in_channels: int, receptive_field: ReceptiveField = 70, features: int = 64,
                 norm: Norm = "batch") -> None:
        super().__init__()
        bias = conv_bias(norm)
        if receptive_field == 1:
            layers: list[nn.Module] = [
                nn.Conv2d(in_channels, features, 1), nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(features, 2 * features, 1, bias=bias), norm_layer(norm, 2 * features),
                nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(2 * features, 1, 1, bias=bias),
            ]
        elif receptive_field in PATCH_LAYERS:
            n_layers = PATCH_LAYERS[receptive_field]
            layers = [nn.Conv2d(in_channels, features, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            width = features
            for n in range(1, n_layers + 1):  # n_layers - 1 more stride-2 layers, then one stride-1 layer
                out = features * min(2**n, 8)
                stride = 2 if n < n_layers else 1
                layers += [nn.Conv2d(width, out, 4, stride, 1, bias=bias), norm_layer(norm, out),
                           nn.LeakyReLU(0.2, inplace=True)]
                width = out
            layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        else:
            raise ConfigError(f"receptive_field must be one of 1, 16, 70, 286; got {receptive_field!r}.")
        self.net = nn.Sequential(*layers)
        self.receptive_field = receptive_field
        dcgan_init(self)  # N(0, 0.02) weights, as the reference code

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    @staticmethod
    def map_side(side: int, receptive_field: int) -> int:
        """The side of the logit map for an input side: halved by each stride-2 layer, minus 1 for each of the
        two stride-1 4x4 layers (the 1x1 PixelGAN keeps it)."""
        if receptive_field == 1:
            return side
        return side // 2 ** PATCH_LAYERS[receptive_field] - 2

    @staticmethod
    def check_fits(height: int, width: int, receptive_field: int) -> None:
        """Raise `ConfigError` naming the fix when `height x width` images leave no patch (a logit map of side 0)."""
        if min(PatchGAN.map_side(side, receptive_field) for side in (height, width)) < 1:
            smallest = next(s for s in range(1, 1025) if PatchGAN.map_side(s, receptive_field) >= 1)
            raise ConfigError(
                f"the {receptive_field}x{receptive_field} PatchGAN needs images of at least {smallest} pixels a side; "
                f"these are {height}x{width}. Use a smaller `receptive_field` (16 or 1) or larger images "
                "(`crop_size`)."
            )


__all__ = ["Norm", "PatchGAN", "ReceptiveField", "UNet", "conv_bias", "norm_layer", "unet_depth"]
