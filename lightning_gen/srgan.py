"""SRGAN: Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial Network"
(CVPR 2017).

The SRResNet generator G (started from a trained `SRResNet` checkpoint, as the paper does, to avoid poor local
optima) and a discriminator D (eight strided convolutions, dense layers, one logit) train in turns:

- D minimises the GAN loss of D(HR) as real and D(G(LR)) as fake;
- G minimises `content_weight` x the mean squared difference of a frozen ImageNet network's activations on G(LR)
  and HR (the paper's "VGG54": VGG19 relu5_4; offline, the MobileNet v1 0.25 of `lightning_gen.nn.features`)
  + `adversarial_weight` (1e-3) x the GAN loss of D(G(LR)) as real + `pixel_weight` x MSE (0 in the paper).

Manual optimization, one Adam per network; under DDP each network's gradients are averaged for its own step
(`Technique.optimizing`). `validate`/`test` report PSNR and SSIM per set beside bicubic's (an SRGAN's PSNR is
lower than SRResNet's by design: it trades pixel agreement for texture), with (bicubic | SRGAN | HR) strips.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_gen.core.checkpoints import load_checkpoint
from lightning_gen.core.checks import ConfigError, check_learning_rates
from lightning_gen.core.optim import adam
from lightning_gen.core.runs import logs_this_step
from lightning_gen.core.technique import Technique
from lightning_gen.losses import GANLoss, discriminator_loss, generator_loss
from lightning_gen.metrics.sr import SREvaluation, SuperResolutionEvaluation, check_residual
from lightning_gen.nn.features import Backbone, FeatureNet, attach_frozen, check_layers, on_device
from lightning_gen.nn.norm import Norm
from lightning_gen.nn.sr import SRDiscriminator, SRResNet

DEFAULT_CONTENT_LAYER = {"vgg19": "relu5_4", "vgg16": "relu5_3", "mobilenet_v1": "conv_pw_11_relu"}


def checkpoint_norm(hparams: dict[str, Any]) -> str:
    """The generator normalisation an SRResNet or SRGAN checkpoint was trained with (`batch_norm: true/false` in
    checkpoints from before `norm`)."""
    if "norm" in hparams:
        return str(hparams["norm"])
    return "batch" if hparams.get("batch_norm", True) else "none"


class SRGAN(SuperResolutionEvaluation, Technique):
    """Ledig et al.'s SRGAN: SRResNet generator, strided-conv discriminator, perceptual content loss + 1e-3 GAN loss.

    Args:
        scale: upscaling factor (2, 3 or 4; must equal the datamodule's).
        channels: generator feature channels (64).
        num_blocks: generator residual blocks (16).
        residual: the generator adds the bicubic upsampling of its input (as `SRResNet(residual=True)`; must match
            `generator_ckpt`).
        norm: normalisation in both networks: `batch` (the paper's), `none`, `layer`, `instance` or `group` (see
            `lightning_gen.nn.norm`; the generator's must match `generator_ckpt`).
        d_channels: the discriminator's first-layer channels (64).
        generator_ckpt: a trained `SRResNet` checkpoint of the same scale and size to start the generator from
            (strongly advised; `null` starts from random weights).
        backbone: the content loss's feature network: `vgg19` (the paper's; needs its weights), `vgg16` or
            `mobilenet_v1` (offline).
        weights: its weights: a file, `imagenet` (torch hub cache, downloaded there if missing) or `random` (tests).
        content_layer: the layer compared (default: vgg19 relu5_4, mobilenet conv_pw_11_relu).
        content_weight: weight of the feature MSE (the paper divides VGG features by 12.75: 0.006 here for VGG).
        adversarial_weight: weight of the generator's GAN loss (1e-3 in the paper).
        pixel_weight: weight of a pixel MSE term (0 in the paper).
        gan_loss: `bce` (the paper's), `lsgan` or `hinge`, on logits.
        lr: Adam's learning rate for both networks (1e-4 in the paper, then 1e-5).
        channel: evaluation on the luminance (`y`) or `rgb`.
        num_strips: images per evaluation set shown as strips.
    """

    def __init__(
        self,
        scale: Literal[2, 3, 4] = 4,
        channels: int = 64,
        num_blocks: int = 16,
        residual: bool = False,
        norm: Norm = "batch",
        d_channels: int = 64,
        generator_ckpt: str | None = None,
        backbone: Backbone = "vgg19",
        weights: str = "imagenet",
        content_layer: str | None = None,
        content_weight: float = 1.0,
        adversarial_weight: float = 1e-3,
        pixel_weight: float = 0.0,
        gan_loss: GANLoss = "bce",
        lr: float = 1e-4,
        channel: Literal["y", "rgb"] = "y",
        num_strips: int = 2,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        self.save_hyperparameters()
        self.automatic_optimization = False
        if min(content_weight, adversarial_weight, pixel_weight) < 0 or lr <= 0:
            raise ConfigError("loss weights must be 0 or more and lr positive; got "
                              f"{content_weight}, {adversarial_weight}, {pixel_weight}, {lr}.")
        self.content_layer = check_layers(backbone, [content_layer or DEFAULT_CONTENT_LAYER[backbone]],
                                          "content_layer")[0]
        self.evaluation = SREvaluation(channel, border=scale, num_strips=num_strips)

    def build(self) -> None:
        hp = self.hparams
        self.generator = SRResNet(hp.scale, hp.channels, hp.num_blocks, hp.norm, residual=hp.residual)
        self.discriminator = SRDiscriminator(hp.d_channels, hp.norm)
        # a new fit starts G from the SRResNet checkpoint; a resumed fit or a loaded checkpoint has its own weights
        if hp.generator_ckpt and self.stage == "fit" and self.trainer.ckpt_path is None:
            self.load_generator(hp.generator_ckpt)

    def forward(self, lr: Tensor) -> Tensor:
        return self.generator(lr)

    def upscale(self, batch: dict[str, Tensor]) -> Tensor:
        return self(batch["lr"])

    def setup(self, stage: str) -> None:
        super().setup(stage)  # the data's scale must be the model's
        if stage == "fit":
            attach_frozen(self, "features", FeatureNet(self.hparams.backbone, self.hparams.weights))

    def load_generator(self, path: str) -> None:
        """Copy the generator weights of an `SRResNet` (or SRGAN) checkpoint into this generator."""
        try:
            checkpoint = load_checkpoint(path)
        except FileNotFoundError:
            raise ConfigError(f"generator_ckpt {path} does not exist: train an SRResNet first "
                              "(configs/srresnet/...) and give its last.ckpt.") from None
        saved = checkpoint_norm(checkpoint.get("hyper_parameters", {}))
        if saved != self.hparams.norm:  # layer and group norm have the same weights: the keys cannot tell them apart
            raise ConfigError(f"generator_ckpt {path} was trained with norm={saved} but this model has "
                              f"norm={self.hparams.norm}; set --model.norm {saved} to match it.")
        state = checkpoint["state_dict"]
        weights = {k.removeprefix("generator."): v for k, v in state.items() if k.startswith("generator.")}
        own = self.generator.state_dict()
        mismatched = [k for k in own if k not in weights or weights[k].shape != own[k].shape]
        mismatched += sorted(set(weights) - set(own))  # e.g. a second upsampling stage: another scale
        if mismatched:
            raise ConfigError(f"generator_ckpt {path} does not fit this generator (scale {self.hparams.scale}, "
                              f"{self.hparams.channels} channels, {self.hparams.num_blocks} blocks): "
                              f"{mismatched[:3]} differ. Use an SRResNet checkpoint with the same settings.")
        check_residual(checkpoint, self.hparams.residual, f"generator_ckpt {path}")
        self.generator.load_state_dict(weights)

    def configure_optimizers(self) -> Any:
        return [adam(self, self.generator.parameters(), self.hparams.lr),
                adam(self, self.discriminator.parameters(), self.hparams.lr)]

    def content_loss(self, sr: Tensor, hr: Tensor) -> Tensor:
        features = on_device(self.features, sr.device)
        fake = features(sr, [self.content_layer])[self.content_layer]
        with torch.no_grad():
            real = features(hr, [self.content_layer])[self.content_layer]
        return F.mse_loss(fake.float(), real.float())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        hp = self.hparams
        lr_images, hr = batch["lr"], batch["hr"]
        opt_g, opt_d = self.optimizers()
        sr = self.generator(lr_images)  # (B, 3, h, w) -> (B, 3, scale*h, scale*w)

        with self.optimizing(opt_d, self.discriminator) as step:  # D: HR as real, G's upscaling as fake
            d_loss = discriminator_loss(self.discriminator(hr), self.discriminator(sr.detach()), hp.gan_loss)
            step(d_loss)

        with self.optimizing(opt_g, self.generator) as step:  # G: content + adversarial (+ pixel) loss
            content = self.content_loss(sr, hr)
            adversarial = generator_loss(self.discriminator(sr), hp.gan_loss)
            pixel = F.mse_loss(sr.float(), hr.float())
            g_loss = hp.content_weight * content + hp.adversarial_weight * adversarial + hp.pixel_weight * pixel
            step(g_loss)
        if logs_this_step(self.trainer):
            n = len(hr)
            self.log_dict({"train/d_loss": d_loss.detach(), "train/g_loss": g_loss.detach()}, prog_bar=True,
                          batch_size=n)
            self.log_dict({"train/content": content.detach(), "train/adversarial": adversarial.detach(),
                           "train/pixel_mse": pixel.detach()}, batch_size=n)
