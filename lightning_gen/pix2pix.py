"""pix2pix: Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks" (2017).

A U-Net generator G translates an input image x into an output G(x); a conditional PatchGAN D sees the input and
an output side by side and says, per patch, whether the output is the real target y or G's. D minimises
0.5 * (GAN loss on D(x, y) as real + on D(x, G(x)) as fake) (halved, as the paper does, to slow D down); G
minimises the GAN loss of D(x, G(x)) as real + `l1_weight` * |G(x) - y|_1. Both networks use Adam(2e-4, 0.5) at a
constant learning rate for `constant_epochs` epochs, then a linear decay towards 0 over `decay_epochs`.

At test time the paper runs the generator as in training: dropout on and batch norm with the statistics of the
images being translated (with batch size 1, instance normalisation). That is `test_time: as_training`, the default;
`eval` gives the usual eval mode. `validate`/`test` report L1 (on [-1, 1] pixels, the training loss's scale), PSNR
and SSIM (on [0, 1] pixels, averaged over images), and with `fid_network: inception` the Frechet distance between
Inception features of the outputs and of the targets; a grid of (input | output | target) triplets is saved as PNG
and sent to W&B. `predict` translates a folder of images (see `datamodules.PairedImages`) and writes the outputs
under the inputs' names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from lightning_gen.core.checks import ConfigError, resolve_image_shape
from lightning_gen.core.cpu import FlushDenormals
from lightning_gen.core.distributed import disable_ddp_gradient_sync, step_network
from lightning_gen.losses import GANLoss, discriminator_loss, pix2pix_generator_loss
from lightning_gen.metrics import InceptionFeatures, frechet_distance
from lightning_gen.nn import PatchGAN, UNet, unet_depth
from lightning_gen.nn.pix2pix import Norm, ReceptiveField
from lightning_gen.core.optim import adam, scale_learning_rates
from lightning_gen.core.runs import logs_this_step, save_and_log_images


@contextmanager
def batch_statistics(net: nn.Module) -> Iterator[None]:
    """Run `net` as in training (dropout on, batch norm normalising with the batch's own statistics) without
    changing its running statistics."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in norms]
    was_training = net.training
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    net.train()
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
        net.train(was_training)


class Pix2Pix(FlushDenormals, L.LightningModule):
    """pix2pix: U-Net generator, conditional PatchGAN, GAN loss + L1. Use with `datamodules.PairedImages`.

    Args:
        num_downs: the U-Net's stride-2 downsamplings (default: log2 of the image side, 8 for 256x256: a 1x1
            bottleneck).
        g_features: width of the U-Net's first layer.
        d_features: width of the PatchGAN's first layer.
        receptive_field: the PatchGAN's patch size in pixels: 1 (PixelGAN), 16, 70 (the paper's default) or 286
            (an ImageGAN at 256x256).
        norm: `batch` or `instance` normalisation, in both networks.
        dropout: dropout probability in the U-Net's innermost decoder layers (0: none).
        gan_loss: `bce` or `lsgan` (or `hinge`), on D's logits.
        l1_weight: lambda, the weight of the L1 term in G's loss.
        lr: Adam learning rate of both networks.
        betas: Adam betas of both networks.
        constant_epochs: epochs at the full learning rate.
        decay_epochs: epochs of linear decay after those (the learning rate of the k-th is
            lr * (1 - k / (decay_epochs + 1))). Train for `constant_epochs + decay_epochs` epochs.
        test_time: how G translates in validate/test/predict: `as_training` (dropout on, batch norm with the
            statistics of the images at hand, as the paper) or `eval` (running statistics, no dropout).
        fid_network: `inception` adds the Frechet distance on torchvision Inception v3 features of the outputs
            vs the targets to validate/test (needs the weights, see `inception_weights`); `none` skips it.
        inception_weights: path of the Inception v3 weights file (default: the torch hub cache).
        num_triplets: (input | output | target) triplets in the grid saved after each validation.
        flush_denormal: on CPU, flush denormal floats to zero while fitting (they slow CPU kernels down; results
            are unchanged).
        input_channels: channels of the input images; taken from the datamodule when not given.
        image_shape: (channels, height, width) of the output images; taken from the datamodule when not given.
    """

    def __init__(
        self,
        num_downs: int | None = None,
        g_features: int = 64,
        d_features: int = 64,
        receptive_field: ReceptiveField = 70,
        norm: Norm = "batch",
        dropout: float = 0.5,
        gan_loss: GANLoss = "bce",
        l1_weight: float = 100.0,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        constant_epochs: int = 100,
        decay_epochs: int = 100,
        test_time: Literal["as_training", "eval"] = "as_training",
        fid_network: Literal["none", "inception"] = "none",
        inception_weights: str | None = None,
        num_triplets: int = 8,
        flush_denormal: bool = True,
        input_channels: int | None = None,
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        if l1_weight < 0 or lr <= 0 or constant_epochs < 0 or decay_epochs < 0 or num_triplets < 0:
            raise ConfigError("l1_weight, constant_epochs, decay_epochs and num_triplets must be 0 or more, lr "
                              "positive.")
        if gan_loss not in ("bce", "lsgan", "hinge"):
            raise ConfigError(f"gan_loss must be bce, lsgan or hinge; got {gan_loss!r}.")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator: UNet | None = None
        self.discriminator: PatchGAN | None = None
        self._fid: list[InceptionFeatures] = []  # in a list: a feature network, not part of the checkpoint
        self.metrics = nn.ModuleDict({stage: MetricCollection({
            "l1": MeanAbsoluteError(),
            "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),  # per image, then averaged
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
        }, prefix=f"{stage}/") for stage in ("val", "test")})
        self._triplets: list[Tensor] = []
        self._fid_features: dict[str, list[Tensor]] = {"output": [], "target": []}
        if input_channels is not None and image_shape is not None:
            self._build(input_channels, tuple(image_shape))

    def _build(self, input_channels: int, image_shape: tuple[int, int, int]) -> None:
        hp = self.hparams
        depth = unet_depth(image_shape[1], image_shape[2], hp.num_downs)
        if min(PatchGAN.map_side(side, hp.receptive_field) for side in image_shape[1:]) < 1:
            smallest = next(s for s in range(1, 1025) if PatchGAN.map_side(s, hp.receptive_field) >= 1)
            raise ConfigError(
                f"the {hp.receptive_field}x{hp.receptive_field} PatchGAN needs images of at least {smallest} pixels "
                f"a side; these are {image_shape[1]}x{image_shape[2]}. Use a smaller `receptive_field` (16 or 1) "
                "or larger images (`crop_size`)."
            )
        self.generator = UNet(input_channels, image_shape[0], depth, hp.g_features, hp.norm, hp.dropout)
        self.discriminator = PatchGAN(input_channels + image_shape[0], hp.receptive_field, hp.d_features, hp.norm)
        self.hparams.input_channels, self.hparams.image_shape = input_channels, tuple(image_shape)

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        shape = resolve_image_shape(self.hparams.image_shape, datamodule, "Pix2Pix")
        channels = self.hparams.input_channels or getattr(datamodule, "input_channels", None)
        if channels is None:
            raise ConfigError("Pix2Pix needs the number of input channels: use `datamodules.PairedImages` or set "
                              "`--model.input_channels`.")
        if self.generator is None:
            self._build(int(channels), shape)
        if self.hparams.fid_network == "inception" and not self._fid and stage != "predict":
            self._fid.append(InceptionFeatures(self.hparams.inception_weights))  # a missing file fails here

    # ---- translation ------------------------------------------------------------------------------------------
    def forward(self, inputs: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W) in [-1, 1], the generator as in its current mode."""
        return self.generator(inputs)

    def translate(self, inputs: Tensor) -> Tensor:
        """The generator's output as `test_time` says (for validate/test/predict)."""
        if self.hparams.test_time == "as_training":
            with batch_statistics(self.generator):
                return self.generator(inputs)
        return self.generator(inputs)

    def pair(self, inputs: Tensor, outputs: Tensor) -> Tensor:
        """D's view: the input and an output side by side, (B, C_in + C_out, H, W) -> (B, 1, h, w) logits."""
        return self.discriminator(torch.cat([inputs, outputs], dim=1))

    # ---- training -------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        inputs, targets = self._unpack(batch)
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        disable_ddp_gradient_sync(self.trainer)  # each network's gradients are averaged for its own step below
        outputs = self.generator(inputs)

        # discriminator: real pairs vs generated pairs, halved
        self.toggle_optimizer(opt_d)
        d_loss = 0.5 * discriminator_loss(self.pair(inputs, targets), self.pair(inputs, outputs.detach()), hp.gan_loss)
        step_network(self, opt_d, d_loss, self.discriminator)
        self.untoggle_optimizer(opt_d)

        # generator: fool the updated discriminator, and stay close to the target in L1
        self.toggle_optimizer(opt_g)
        g_loss, g_gan, g_l1 = pix2pix_generator_loss(self.pair(inputs, outputs), outputs, targets, hp.gan_loss,
                                                     hp.l1_weight)
        step_network(self, opt_g, g_loss, self.generator)
        self.untoggle_optimizer(opt_g)
        if logs_this_step(self.trainer):
            self.log_dict({"train/d_loss": d_loss.detach(), "train/g_loss": g_loss.detach()}, prog_bar=True)
            self.log_dict({"train/g_gan": g_gan.detach(), "train/g_l1": g_l1.detach()})

    def _unpack(self, batch: Any) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ConfigError("Pix2Pix trains on (input, target) pairs: use `datamodules.PairedImages`.")
        inputs, targets = batch
        want_in, want_out = self.hparams.input_channels, tuple(self.hparams.image_shape)
        if inputs.shape[1] != want_in or tuple(targets.shape[1:]) != want_out or inputs.shape[2:] != targets.shape[2:]:
            raise ConfigError(
                f"Pix2Pix was built for inputs of {want_in} channels and targets of shape {want_out}, but a batch has "
                f"inputs {tuple(inputs.shape[1:])} and targets {tuple(targets.shape[1:])}. Match the datamodule's "
                "crop_size and channels to the model (or train a new one)."
            )
        return inputs, targets

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return [adam(self, self.generator.parameters(), lr=hp.lr, betas=hp.betas),
                adam(self, self.discriminator.parameters(), lr=hp.lr, betas=hp.betas)]

    def lr_factor(self, epoch: int) -> float:
        """The learning-rate factor of `epoch` (0-based): 1, then linear decay towards 0."""
        hp = self.hparams
        return 1.0 - max(0, epoch + 1 - hp.constant_epochs) / (hp.decay_epochs + 1)

    def on_fit_start(self) -> None:
        super().on_fit_start()  # flush denormals on CPU
        hp, max_epochs = self.hparams, self.trainer.max_epochs
        if max_epochs is not None and max_epochs > hp.constant_epochs + hp.decay_epochs:
            rank_zero_warn(f"max_epochs={max_epochs} is more than constant_epochs + decay_epochs = "
                           f"{hp.constant_epochs + hp.decay_epochs}: the epochs after those train at learning rate 0.")

    def on_train_epoch_start(self) -> None:
        # manual optimization: the schedule is applied here, from the epoch number (so resumes get it right too)
        scale_learning_rates(self.optimizers(), [self.hparams.lr] * 2, max(0.0, self.lr_factor(self.current_epoch)))

    # ---- evaluation -----------------------------------------------------------------------------------------
    def _evaluate(self, batch: Any, batch_idx: int, stage: str) -> None:
        inputs, targets = self._unpack(batch)
        outputs = self.translate(inputs).float()
        targets = targets.float()
        self.metrics[stage].update(outputs.add(1).div(2).clamp(0, 1), targets.add(1).div(2))  # on [0, 1] pixels
        if self._fid:
            net = self._fid[0].to(self.device)
            self._fid_features["output"].append(net(outputs))
            self._fid_features["target"].append(net(targets))
        have = sum(len(t) for t in self._triplets) // 3  # triplets so far
        if have < self.hparams.num_triplets:
            take = self.hparams.num_triplets - have
            rgb = [t[:take].expand(-1, 3, -1, -1) if t.shape[1] == 1 else t[:take]
                   for t in (inputs.float(), outputs, targets)]
            self._triplets.append(torch.stack(rgb, dim=1).flatten(0, 1).cpu())  # (take * 3, 3, H, W), row by row

    def _finish(self, stage: str) -> None:
        values = self.metrics[stage].compute()
        values[f"{stage}/l1"] = values[f"{stage}/l1"] * 2  # [0, 1] pixels -> the [-1, 1] scale of the training loss
        self.log_dict(values, prog_bar=True)
        self.metrics[stage].reset()
        if self._fid and self._fid_features["output"]:
            net = self._fid[0]
            outputs, targets = (self.all_gather(torch.cat(self._fid_features[k])).reshape(-1, net.num_features)
                                for k in ("output", "target"))
            if len(outputs) >= 2:
                self.log(f"{stage}/{net.name}_fid", frechet_distance(targets.cpu(), outputs.cpu()), rank_zero_only=True)
        self._fid_features = {"output": [], "target": []}
        if self._triplets and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            save_and_log_images(self.trainer, f"{stage}/triplets", torch.cat(self._triplets), nrow=3)
        self._triplets = []

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    # ---- predict: translate a folder ---------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"images": self.translate(batch["input"]), "names": list(batch["name"])}
