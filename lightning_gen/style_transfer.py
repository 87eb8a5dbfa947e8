"""Neural style transfer by optimisation: Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural
Networks" (CVPR 2016).

The module's only parameter is the image being made, x, of the content image's size (longer side `image_size`).
A frozen ImageNet network F (see `lightning_gen.nn.features`) measures it, and `fit` minimises

    content_weight * sum_l mean (F_l(x) - F_l(content))^2          over `content_layers`
  + style_weight   * sum_l mean (G(F_l(x)) - G(F_l(style)))^2      over `style_layers`, G the Gram matrix
  + tv_weight      * total variation of x

with L-BFGS (one function evaluation per training step, history kept across steps) or Adam, clamping x to the
image range after every step. Each epoch is `steps_per_epoch` steps; after each the current image is saved to
`<run>/samples/stylised_epochNNNN.png` and sent to W&B, and at the end of `fit` to `<run>/stylised.png`.
`predict` with a checkpoint writes the image again. There is no dataset: leave `data` out.

    lightning-gen fit --config configs/style_transfer/mobilenet.yaml \
        --model.content $LIGHTNING_GEN_DATA/style/content/chelsea.png \
        --model.style $LIGHTNING_GEN_DATA/style/style/the_scream.jpg
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor, nn
from torch.utils.data import DataLoader

from datamodules.base import Ticks
from datamodules.files import image_file, load_image
from lightning_gen.core.checks import ConfigError, check_learning_rates
from lightning_gen.core.optim import adam
from lightning_gen.core.runs import logs_this_step, run_dir, save_and_log_images
from lightning_gen.core.technique import Technique
from lightning_gen.nn.features import Backbone, attach_frozen, check_style_config, on_device, perceptual_loss


class StyleTransfer(Technique):
    """Gatys et al.'s style transfer: optimise one image to the content of one picture and the style of another.

    Args:
        content: the content image (a file; `$VARS` and `~` expanded).
        style: the style image.
        image_size: longer side of the made image (the content image is resized to it, keeping its aspect).
        style_size: longer side the style image is resized to before its Gram matrices are taken (default:
            `image_size`). Larger makes larger brush strokes.
        init: start from the content image (`content`) or from noise (`noise`).
        backbone: the feature network: `mobilenet_v1` (ImageNet MobileNet v1 0.25, offline), `vgg16` or `vgg19`.
        weights: its weights: a file path, `imagenet` (torch hub cache, downloaded there if missing) or `random`
            (tests only).
        content_layers: layers of the content term (default per backbone: vgg19 relu4_2, mobilenet conv_pw_5_relu).
        style_layers: layers of the style term (default per backbone: vgg19 relu1_1 ... relu5_1).
        content_weight: weight of the content term.
        style_weight: weight of the style term (Gram matrices are divided by C*H*W).
        tv_weight: weight of the total-variation term (smoothness).
        optimizer: `lbfgs` (Gatys et al.; fp32 only) or `adam`.
        lr: step size: 1.0 suits L-BFGS; Adam on [-1, 1] pixels wants about 0.02.
        steps_per_epoch: optimisation steps per epoch; the image is saved after each epoch.
    """

    def __init__(
        self,
        content: str,
        style: str,
        image_size: int = 384,
        style_size: int | None = None,
        init: Literal["content", "noise"] = "content",
        backbone: Backbone = "mobilenet_v1",
        weights: str = "imagenet",
        content_layers: list[str] | None = None,
        style_layers: list[str] | None = None,
        content_weight: float = 1.0,
        style_weight: float = 1e5,
        tv_weight: float = 10.0,
        optimizer: Literal["lbfgs", "adam"] = "lbfgs",
        lr: float = 1.0,
        steps_per_epoch: int = 50,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        self.save_hyperparameters()
        if image_size < 8 or (style_size is not None and style_size < 8):
            raise ConfigError(f"image_size and style_size must be 8 or more; got {image_size}, {style_size}.")
        if steps_per_epoch < 1 or lr <= 0:
            raise ConfigError(f"steps_per_epoch must be 1 or more and lr positive; got {steps_per_epoch}, {lr}.")
        if init not in ("content", "noise") or optimizer not in ("lbfgs", "adam"):
            raise ConfigError(f"init must be content or noise and optimizer lbfgs or adam; got {init!r}, "
                              f"{optimizer!r}.")
        check_style_config(backbone, content_layers, style_layers,
                           {"content_weight": content_weight, "style_weight": style_weight, "tv_weight": tv_weight})
        # Both images are read now, so a bad path stops the run before any weights are loaded.
        self.content_image = load_image(image_file(content, "content image"), image_size)  # (1, 3, H, W)
        self.style_image = load_image(image_file(style, "style image"), style_size or image_size)
        self.content_targets: dict[str, Tensor] = {}

    def build(self) -> None:
        """The one trained parameter: the image, of the content image's size (known from `__init__`, so this needs
        no data). The frozen feature network of the loss is not part of the checkpoint: `setup` makes it for `fit`
        only (`predict` writes the image and needs no weights file)."""
        start = self.content_image.clone()
        if self.hparams.init == "noise":
            start = torch.rand(start.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
        # (1, 3, H, W) in [-1, 1]: what `fit` optimises; contiguous, as L-BFGS flattens its gradient with `view`
        self.image = nn.Parameter(start.contiguous())

    # ---- the loss -----------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        hp = self.hparams
        precision = str(self.trainer.precision)
        if hp.optimizer == "lbfgs" and precision not in ("32-true", "64-true"):
            raise ConfigError(f"L-BFGS does not work under mixed precision ({precision}): use "
                              "`--trainer.precision 32-true` or `--model.optimizer adam`.")
        loss = perceptual_loss(hp.backbone, hp.weights, hp.content_layers, hp.style_layers, hp.content_weight,
                               hp.style_weight, hp.tv_weight)
        attach_frozen(self, "perceptual", loss)
        on_device(loss, self.device)
        loss.set_style(self.style_image.to(self.device))
        self.content_targets = loss.content_targets(self.content_image.to(self.device))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Ticks(self.hparams.steps_per_epoch), batch_size=None)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.hparams.optimizer == "lbfgs":
            # one evaluation per step, so the progress bar counts evaluations; the curvature history carries over
            return torch.optim.LBFGS([self.image], lr=self.hparams.lr, max_iter=1, history_size=50)
        return adam(self, [self.image], self.hparams.lr)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        terms = on_device(self.perceptual, self.device)(self.image, self.content_targets)
        if logs_this_step(self.trainer):
            self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=1)
            self.log("loss", terms["total"].detach(), prog_bar=True, logger=False, batch_size=1)
        return terms["total"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            self.image.clamp_(-1, 1)

    # ---- the made image -----------------------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        save_and_log_images(self.trainer, "stylised", self.image.detach())

    @rank_zero_only
    def on_train_end(self) -> None:
        from torchvision.utils import save_image

        path = run_dir(self.trainer) / "stylised.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(self.image.detach().float().clamp(-1, 1).add(1).div(2), path)
        rank_zero_info(f"Stylised image: {path}")

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(Ticks(1), batch_size=None)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return {"images": self.image.detach().clamp(-1, 1), "names": ["stylised.png"]}
