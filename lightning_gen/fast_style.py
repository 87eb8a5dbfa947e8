"""Fast style transfer: Johnson, Alahi & Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
Super-Resolution" (ECCV 2016), with Ulyanov et al.'s instance normalisation.

An image-transformation network T (a 9x9 convolution, two stride-2 convolutions, residual blocks, two
nearest-neighbour upsamplings each followed by a convolution (Odena et al.'s fix for checkerboard artefacts), a 9x9
convolution to RGB and a tanh) is trained on a folder of content photos x against one style image s, with the
perceptual loss of `StyleTransfer` (`lightning_gen.nn.features.PerceptualLoss`, on a frozen ImageNet network F):

    content_weight * mean (F_c(T(x)) - F_c(x))^2 + style_weight * sum_l mean (G(F_l(T(x))) - G(F_l(s)))^2
  + tv_weight * TV(T(x))

Then one forward pass stylises an image of any size (it is padded by reflection to a multiple of 4 and cropped
back, so the output has the input's size). `validate` reports the loss terms on held-out photos (each photo counted
once under DDP) and saves a grid of (photo | stylised) pairs; `predict` stylises the images of `predict_images` (a
file or folder), one pass each, and writes them under their names.

The training images are the first element of each batch: any image datamodule works (`ImageFolder` of photos, or
`PairedImages` with the photo half as the input). Greyscale batches are repeated to RGB.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from datamodules.files import ImageFiles, image_file, load_image
from lightning_gen.core.checks import ConfigError, check_learning_rates
from lightning_gen.core.optim import adam
from lightning_gen.core.runs import logs_this_step, save_and_log_images
from lightning_gen.core.technique import Technique
from lightning_gen.nn.features import Backbone, attach_frozen, check_style_config, on_device, perceptual_loss
from lightning_gen.nn.norm import Norm, make_norm


class ConvNormReLU(nn.Sequential):
    """Reflection-padded convolution -> normalisation (affine instance norm by default) -> ReLU (or none with
    `relu=False`)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True,
                 norm: Norm = "instance") -> None:
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride),
                                   make_norm(norm, cout)]
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: Norm = "instance") -> None:
        super().__init__()
        self.body = nn.Sequential(ConvNormReLU(channels, channels, 3, norm=norm),
                                  ConvNormReLU(channels, channels, 3, relu=False, norm=norm))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class TransformNet(nn.Module):
    """Johnson et al.'s image-transformation network; `width` is the first layer's channels (32 in the paper;
    the downsampled body has 4 * width; `norm` after every convolution but the last, affine instance norm as Ulyanov
    et al.). `(B, 3, H, W)` in [-1, 1] -> `(B, 3, H, W)` in [-1, 1], any H and W."""

    def __init__(self, width: int = 32, num_residual: int = 5, norm: Norm = "instance") -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            ConvNormReLU(3, w, 9, norm=norm), ConvNormReLU(w, 2 * w, 3, 2, norm=norm),
            ConvNormReLU(2 * w, 4 * w, 3, 2, norm=norm),  # -> (4w, H/4, W/4)
            *[ResidualBlock(4 * w, norm) for _ in range(num_residual)],
            nn.Upsample(scale_factor=2, mode="nearest"), ConvNormReLU(4 * w, 2 * w, 3, norm=norm),
            nn.Upsample(scale_factor=2, mode="nearest"), ConvNormReLU(2 * w, w, 3, norm=norm),  # -> (w, H, W)
            nn.ReflectionPad2d(4), nn.Conv2d(w, 3, 9),
        )

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        # two stride-2 steps need sides divisible by 4, and the 9x9 reflection padding sides of 8 or more
        pad_h, pad_w = max(8, h + -h % 4) - h, max(8, w + -w % 4) - w
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if h > pad_h and w > pad_w else "replicate")
        return torch.tanh(self.net(x))[..., :h, :w]


class FastStyleTransfer(Technique):
    """Johnson et al.'s feed-forward style transfer: train a network to paint photos in one style.

    Args:
        style: the style image (a file; `$VARS` and `~` expanded).
        style_size: longer side the style image is resized to for its Gram matrices (about the training crops' side).
        backbone: the loss network: `mobilenet_v1` (ImageNet MobileNet v1 0.25, offline), `vgg16` or `vgg19`.
        weights: its weights: a file path, `imagenet` (torch hub cache, downloaded there if missing) or `random`
            (tests only).
        content_layers: layers of the content term (default per backbone).
        style_layers: layers of the style term (default per backbone).
        content_weight: weight of the content term.
        style_weight: weight of the style term (Gram matrices divided by C*H*W).
        tv_weight: weight of the total-variation term.
        width: channels of the transformation network's first layer (32 in the paper; 16 is 4x cheaper).
        num_residual: residual blocks (5 in the paper).
        norm: normalisation in the transformation network: `instance` (Ulyanov et al.'s, with scale and shift; the
            default), `batch` (Johnson et al.'s original), `layer`, `group` or `none` (see `lightning_gen.nn.norm`).
        lr: Adam's learning rate (1e-3 in the paper).
        num_val_images: validation photos shown, with their stylised versions, in the saved grid.
        predict_images: a file or folder of images that `predict` stylises (any size).
        predict_size: resize those so their longer side is this (default: their own size).
    """

    owns_predict_inputs = True  # `predict` reads `predict_images`, not the training datamodule

    def __init__(
        self,
        style: str,
        style_size: int = 256,
        backbone: Backbone = "mobilenet_v1",
        weights: str = "imagenet",
        content_layers: list[str] | None = None,
        style_layers: list[str] | None = None,
        content_weight: float = 1.0,
        style_weight: float = 3e3,
        tv_weight: float = 10.0,
        width: int = 32,
        num_residual: int = 5,
        norm: Norm = "instance",
        lr: float = 1e-3,
        num_val_images: int = 8,
        predict_images: str | None = None,
        predict_size: int | None = None,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        self.save_hyperparameters()
        if width < 1 or num_residual < 0 or lr <= 0 or style_size < 8:
            raise ConfigError(f"need width >= 1, num_residual >= 0, lr > 0 and style_size >= 8; got {width}, "
                              f"{num_residual}, {lr}, {style_size}.")
        check_style_config(backbone, content_layers, style_layers,
                           {"content_weight": content_weight, "style_weight": style_weight, "tv_weight": tv_weight})
        self.style_image = load_image(image_file(style, "style image"), style_size)  # (1, 3, h, w)

    def build(self) -> None:
        """The transformation network (it takes any image size, so this needs no data). The frozen loss network is
        not part of the checkpoint: `setup` makes it where a loss is computed (not for `predict`)."""
        self.net = TransformNet(self.hparams.width, self.hparams.num_residual, self.hparams.norm)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def setup(self, stage: str) -> None:
        if stage not in ("fit", "validate", "test"):
            return
        hp = self.hparams
        loss = perceptual_loss(hp.backbone, hp.weights, hp.content_layers, hp.style_layers, hp.content_weight,
                               hp.style_weight, hp.tv_weight)
        attach_frozen(self, "perceptual", on_device(loss, self.device))
        loss.set_style(self.style_image.to(self.device))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adam(self, self.net.parameters(), self.hparams.lr)

    @staticmethod
    def photos(batch: Any) -> Tensor:
        """The content photos of a batch: its first element, as `(B, 3, H, W)`."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ConfigError(f"FastStyleTransfer trains on batches of (B, 1 or 3, H, W) images; got {shape}. Use an "
                              "image datamodule such as datamodules.ImageFolder.")
        return images.expand(-1, 3, -1, -1)

    def losses(self, photos: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss = on_device(self.perceptual, self.device)
        stylised = self.net(photos)
        return stylised, loss(stylised, loss.content_targets(photos))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        photos = self.photos(batch)
        _, terms = self.losses(photos)
        if logs_this_step(self.trainer):
            self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=len(photos))
            self.log("loss", terms["total"].detach(), prog_bar=True, logger=False, batch_size=len(photos))
        return terms["total"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def _evaluate(self, batch: Any, batch_idx: int, stage: str) -> None:
        photos = self.photos(batch)
        keep = self.first_visit(batch_idx, len(photos))  # DDP's repeated photos out
        seen = int(keep.sum())
        if not seen:  # a batch of repeats only: evaluate one photo anyway, with weight 0 (every process logs alike)
            keep[0] = True
        photos = photos[keep]
        stylised, terms = self.losses(photos)  # each term a mean over the batch's photos
        self.log_means(stage, terms, weight=seen)
        if batch_idx == 0 and seen and not self.trainer.sanity_checking:
            n = min(self.hparams.num_val_images, len(photos))
            pairs = torch.stack([photos[:n], stylised[:n]], 1).flatten(0, 1)  # photo, stylised, photo, ...
            save_and_log_images(self.trainer, f"{stage}/pairs", pairs, nrow=2)

    def predict_dataloader(self) -> DataLoader:
        if not self.hparams.predict_images:
            raise ConfigError("FastStyleTransfer's predict stylises `--model.predict_images` (a file or a folder of "
                              "images); set it.")
        return DataLoader(ImageFiles(self.hparams.predict_images, self.hparams.predict_size, "predict_images"),
                          batch_size=1)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"images": self.net(batch["image"]), "names": list(batch["name"])}
