"""DCGAN networks (Radford et al. 2015), with their depth derived from the image size.

Generator: a 1x1 latent vector is projected to a `base x base` map by a transposed convolution, then doubled
`n_up` times by stride-2 transposed convolutions (BatchNorm + ReLU), ending in tanh. Discriminator: the mirror
image, stride-2 convolutions with LeakyReLU(0.2) (no BatchNorm on the first), ending in one `base x base`
convolution that gives a single logit. No hidden fully-connected layers. The normalisation is a choice (`norm`,
`lightning_gen.nn.norm`); batch norm is the paper's.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils import parametrizations

from lightning_gen.core.checks import ConfigError
from lightning_gen.nn.norm import NORM_TYPES, Norm, make_norm


def dcgan_layout(height: int, width: int) -> tuple[int, int]:
    """Return `(base, n_up)` with `side == base * 2**n_up`, `base` in 4..7 and `n_up >= 1`.

    28 -> (7, 2), 32 -> (4, 3), 64 -> (4, 4), 8 -> (4, 1). Raises `ConfigError` (a ValueError) naming the fix otherwise.
    """
    if height != width:
        raise ConfigError(
            f"DCGAN needs square images, got {height}x{width}. Resize them with the datamodule's "
            "`image_size` option (for example `--data.image_size 32`)."
        )
    side, n_up = height, 0
    while side > 7 and side % 2 == 0:
        side //= 2
        n_up += 1
    if not 4 <= side <= 7 or n_up == 0:
        raise ConfigError(
            f"DCGAN cannot take {height}x{width} images: the side must be b * 2^n with b in 4..7 and n >= 1 "
            "(8, 12, 16, 28, 32, 48, 64, 128, ...). Resize the images with the datamodule's `image_size` "
            "option (for example `--data.image_size 32`)."
        )
    return side, n_up


def dcgan_init(module: nn.Module) -> None:
    """The paper's initialisation: conv weights ~ N(0, 0.02), normalisation scales ~ N(1, 0.02) (BatchNorm's in the
    paper; the affine group, layer and instance norms alike), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, NORM_TYPES) and getattr(m, "weight", None) is not None:  # affine normalisation
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """Maps `(B, in_dim)` latent vectors to `(B, C, H, W)` images in [-1, 1] (or to unbounded outputs).

    Args:
        in_dim: length of the input vector (the latent size, plus any conditioning).
        image_shape: `(channels, height, width)` of the images to produce.
        features: channels of the last hidden layer; each earlier layer has twice as many.
        tanh: end in tanh (images in [-1, 1]); `False` returns the last convolution's output (e.g. the
            logits of a VAE's Bernoulli decoder).
        norm: normalisation after every hidden layer (`lightning_gen.nn.norm`; batch norm in the paper).
    """

    def __init__(self, in_dim: int, image_shape: tuple[int, int, int], features: int = 64, tanh: bool = True,
                 norm: Norm = "batch") -> None:
        super().__init__()
        channels, height, width = image_shape
        base, n_up = dcgan_layout(height, width)
        width_ch = features * 2 ** (n_up - 1)
        # (B, in_dim, 1, 1) -> (B, width_ch, base, base)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, width_ch, base, 1, 0, bias=norm == "none"),
            make_norm(norm, width_ch),
            nn.ReLU(inplace=True),
        ]
        for _ in range(n_up - 1):  # each block doubles the side and halves the channels
            layers += [
                nn.ConvTranspose2d(width_ch, width_ch // 2, 4, 2, 1, bias=norm == "none"),
                make_norm(norm, width_ch // 2),
                nn.ReLU(inplace=True),
            ]
            width_ch //= 2
        # (B, features, H/2, W/2) -> (B, C, H, W)
        layers += [nn.ConvTranspose2d(width_ch, channels, 4, 2, 1, bias=not tanh)]
        if tanh:
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.image_shape = tuple(image_shape)
        dcgan_init(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.reshape(z.shape[0], self.in_dim, 1, 1))  # (B, in_dim) -> (B, C, H, W)


class DCGANDiscriminator(nn.Module):
    """Maps `(B, C, H, W)` images to `(B, out_dim)` logits (`(B,)` when `out_dim == 1`).

    Args:
        image_shape: `(channels, height, width)` of the input images.
        features: channels of the first layer; each later layer has twice as many.
        out_dim: number of logits (1 for real/fake; N+1 for a semi-supervised discriminator).
        norm: normalisation after every convolution but the first and the last (batch norm in the paper).
        spectral_norm: divide every convolution's weight by its largest singular value (Miyato et al. 2018, one
            power iteration per training forward), which bounds how fast the discriminator's output can change.
        dropout: probability of zeroing each activation after every LeakyReLU (in training mode).
    """

    def __init__(self, image_shape: tuple[int, int, int], features: int = 64, out_dim: int = 1,
                 norm: Norm = "batch", spectral_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"discriminator dropout must be in [0, 1), got {dropout}.")
        channels, height, width = image_shape
        base, n_up = dcgan_layout(height, width)
        width_ch = features
        def drop() -> list[nn.Module]:
            return [nn.Dropout(dropout)] if dropout else []

        # (B, C, H, W) -> (B, features, H/2, W/2); no BatchNorm on the input layer
        layers: list[nn.Module] = [nn.Conv2d(channels, width_ch, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
                                   *drop()]
        for _ in range(n_up - 1):
            layers += [
                nn.Conv2d(width_ch, width_ch * 2, 4, 2, 1, bias=norm == "none"),
                make_norm(norm, width_ch * 2),
                nn.LeakyReLU(0.2, inplace=True),
                *drop(),
            ]
            width_ch *= 2
        self.features = nn.Sequential(*layers)  # -> (B, width_ch, base, base)
        self.head = nn.Conv2d(width_ch, out_dim, base, 1, 0, bias=False)  # -> (B, out_dim, 1, 1)
        self.out_dim = out_dim
        dcgan_init(self)
        if spectral_norm:  # after the init, which `parametrizations.weight.original` keeps
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    parametrizations.spectral_norm(m)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(self.features(x)).flatten(1)  # (B, out_dim)
        return logits.squeeze(1) if self.out_dim == 1 else logits


__all__ = ["DCGANDiscriminator", "DCGANGenerator", "dcgan_init", "dcgan_layout"]
