"""Conditional GAN: Mirza & Osindero, "Conditional Generative Adversarial Nets" (2014), on DCGAN networks.

Both networks see the class. The generator takes z concatenated with a learned class embedding. The
discriminator takes the class either by projection (Miyato & Koyama 2018: the logit gets the inner product of a
class embedding with the discriminator's last feature map) or as an extra input plane (a learned embedding of the
class, reshaped to one H x W channel, concatenated to the image). Training is DCGAN's (see `lightning_gen.dcgan`):
each batch's fakes are generated for the real batch's classes. Sample grids have one row per class.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_gen.core.checks import (
    ConfigError,
    check_labels,
    check_sample_classes,
    resolve_image_shape,
    resolve_num_classes,
)
from lightning_gen.core.sampling import class_of_index
from lightning_gen.dcgan import DCGAN
from lightning_gen.nn import DCGANDiscriminator, DCGANGenerator, dcgan_init
from lightning_gen.nn.norm import Norm


class ConditionalGenerator(nn.Module):
    """(B, latent_dim) noise + (B,) classes -> (B, C, H, W): a DCGAN generator fed z concatenated with a learned
    class embedding."""

    def __init__(self, latent_dim: int, num_classes: int, embed_dim: int, image_shape: tuple[int, int, int],
                 features: int, norm: Norm = "batch") -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.net = DCGANGenerator(latent_dim + embed_dim, image_shape, features, norm=norm)
        dcgan_init(self.embed)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.net(torch.cat([z, self.embed(labels).to(z.dtype)], dim=1))  # (B, latent + embed)


class ConditionalDiscriminator(nn.Module):
    """(B, C, H, W) images + (B,) classes -> (B,) logits of a DCGAN discriminator that sees the class by
    `projection` (+ <embed(y), last feature map>) or by `concat` (a learned H x W plane per class as an extra
    input channel). `options`: the `DCGANDiscriminator`'s `norm`, `spectral_norm` and `dropout`."""

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], features: int,
                 conditioning: Literal["projection", "concat"], **options: Any) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.conditioning = conditioning
        if conditioning == "concat":
            self.net = DCGANDiscriminator((channels + 1, height, width), features, **options)
            self.embed = nn.Embedding(num_classes, height * width)
        else:
            self.net = DCGANDiscriminator(image_shape, features, **options)
            self.embed = nn.Embedding(num_classes, self.net.head.in_channels)
        dcgan_init(self.embed)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        if self.conditioning == "concat":
            plane = self.embed(labels).view(-1, 1, *images.shape[-2:]).to(images.dtype)  # (B, 1, H, W)
            return self.net(torch.cat([images, plane], dim=1))
        features = self.net.features(images)  # (B, C', b, b)
        projection = (self.embed(labels)[:, :, None, None].to(features.dtype) * features).sum(dim=(1, 2, 3))
        return self.net.head(features).flatten() + projection  # (B,)


class CGAN(DCGAN):
    """Conditional DCGAN: `generate(z, labels)`; samples and `predict` cycle through `sample_classes`.

    Args:
        num_classes: number of classes; taken from the datamodule when not given.
        embed_dim: length of the generator's class embedding (concatenated to z).
        d_conditioning: how the discriminator sees the class: `projection` or `concat` (an input plane).
        sample_classes: the classes `predict` generates, in turn (image i gets `sample_classes[i % len]`);
            default: every class in turn.
        **kwargs: every DCGAN option (see `--model.help DCGAN`).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        embed_dim: int = 50,
        d_conditioning: Literal["projection", "concat"] = "projection",
        sample_classes: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        if num_classes is not None and num_classes < 2:
            raise ConfigError(f"num_classes must be 2 or more, got {num_classes}.")
        if embed_dim < 1:
            raise ConfigError(f"embed_dim must be positive, got {embed_dim}.")
        if sample_classes is not None and not sample_classes:
            raise ConfigError("sample_classes must name at least one class (or be left out for all classes).")
        check_sample_classes(sample_classes, num_classes)
        super().__init__(**kwargs)

    def build(self) -> None:
        hp = self.hparams
        # the classes come from the data in fit/validate/test; `predict` makes the checkpoint's classes, whatever
        # datamodule is around
        datamodule = self.datamodule if self.stage != "predict" else None
        hp.num_classes = resolve_num_classes(hp.num_classes, datamodule, "CGAN", ", or the unconditional DCGAN")
        check_sample_classes(hp.sample_classes, hp.num_classes)
        hp.image_shape = resolve_image_shape(hp.image_shape, self.datamodule, "CGAN")
        # each network owns its class embedding, so its gradient sync under DDP and the generator EMA include it
        self.generator = ConditionalGenerator(hp.latent_dim, hp.num_classes, hp.embed_dim, hp.image_shape,
                                              hp.g_features, hp.norm)
        self.discriminator = ConditionalDiscriminator(hp.num_classes, hp.image_shape, hp.d_features,
                                                      hp.d_conditioning, **self.discriminator_options())

    # ---- conditioning -----------------------------------------------------------------------------------------
    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:
            raise ValueError("CGAN.generate needs the class of every image")
        return self.generator(z, labels)

    def discriminate(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:
            raise ValueError("CGAN.discriminate needs the class of every image")
        return self.discriminator(images, labels)

    def unpack(self, batch: Any, batch_idx: int) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise ConfigError("CGAN needs (images, labels) batches; this datamodule gives images only.")
        images, labels = batch[0], batch[1]
        if batch_idx == 0:
            check_labels(labels, self.hparams.num_classes, "CGAN")
        return images, labels

    def default_labels(self, indices: Tensor) -> Tensor:
        return class_of_index(indices, self.hparams.num_classes, self.hparams.get("sample_classes"))

    def sample_grid(self) -> tuple[Tensor, int]:
        """One row per class: position (row r, column c) shows index c * N + r, whose class is r."""
        n = len(self.hparams.get("sample_classes") or range(self.hparams.num_classes))
        per_row = max(1, self.hparams.num_samples // n)
        indices = (torch.arange(per_row)[None, :] * n + torch.arange(n)[:, None]).flatten()  # (n * per_row,)
        return self.sample(indices.to(self.device)), per_row
