"""pix2pix: Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks" (2017).

A U-Net generator G translates an input image x into an output G(x); a conditional PatchGAN D sees the input and
an output side by side and says, per patch, whether the output is the real target y or G's. D minimises
0.5 * (GAN loss on D(x, y) as real + on D(x, G(x)) as fake) (halved, as the paper does, to slow D down); G
minimises the GAN loss of D(x, G(x)) as real + `l1_weight` * |G(x) - y|_1. Both networks use Adam(2e-4, 0.5) at a
constant learning rate for `constant_epochs` epochs, then a linear decay towards 0 over `decay_epochs`.

At test time the paper runs the generator as in training: dropout on and batch norm with the statistics of the
images being translated (with batch size 1, instance normalisation). That is `test_time: as_training`, the default;
`eval` gives the usual eval mode. `validate`/`test` report L1 (on [-1, 1] pixels, the training loss's scale), PSNR
and SSIM (on [0, 1] pixels, averaged over images), and with `fid_network: inception` or `tf_inception` the Frechet
distance between Inception features of the outputs and of the targets (each pair counted once under DDP); a grid of
(input | output | target) triplets is saved and sent to W&B. `predict` translates a folder of images and writes the
outputs under the inputs' names.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torchmetrics import CatMetric
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from lightning_gen.core.checks import ConfigError, check_learning_rates, resolve_image_shape
from lightning_gen.core.cpu import FlushDenormals
from lightning_gen.core.optim import adam
from lightning_gen.core.protocols import PairedData
from lightning_gen.core.runs import logs_this_step, save_and_log_images
from lightning_gen.core.technique import LinearDecay, Technique, batch_statistics, epoch_schedule
from lightning_gen.losses import GANLoss, discriminator_loss, pix2pix_generator_loss
from lightning_gen.metrics import FeatureNetwork, InceptionFeatures, TFInceptionFeatures, frechet_distance, metric_name
from lightning_gen.nn.pix2pix import Norm, PatchGAN, ReceptiveField, UNet, unet_depth


class Pix2Pix(FlushDenormals, Technique):
    """pix2pix: U-Net generator, conditional PatchGAN, GAN loss + L1. Use with `datamodules.PairedImages`.

    Args:
        num_downs: the U-Net's stride-2 downsamplings (default: log2 of the image side, 8 for 256x256: a 1x1
            bottleneck).
        g_features: width of the U-Net's first layer.
        d_features: width of the PatchGAN's first layer.
        receptive_field: the PatchGAN's patch size in pixels: 1 (PixelGAN), 16, 70 (the paper's default) or 286
            (an ImageGAN at 256x256).
        norm: normalisation in both networks: `batch` (the paper's), `instance` (without scale and shift, as the
            reference code's option), `layer`, `group` or `none` (see `lightning_gen.nn.norm`).
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
        fid_network: adds the Frechet distance between Inception features of the outputs and of the targets to
            validate/test: `tf_inception` on the standard FID's network (torchmetrics' default, the 2015
            TensorFlow weights; needs torch-fidelity and its weights: `fid`), `inception` on torchvision's
            ImageNet Inception v3 (needs its weights: `tv_inception_fid`); `none` skips it.
        inception_weights: path of the chosen Inception network's weights file (default: the torch hub cache).
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
        fid_network: Literal["none", "inception", "tf_inception"] = "none",
        inception_weights: str | None = None,
        num_triplets: int = 8,
        flush_denormal: bool = True,
        input_channels: int | None = None,
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        check_learning_rates(lr=lr)
        if l1_weight < 0 or constant_epochs < 0 or decay_epochs < 0 or num_triplets < 0:
            raise ConfigError("l1_weight, constant_epochs, decay_epochs and num_triplets must be 0 or more.")
        if gan_loss not in ("bce", "lsgan", "hinge"):
            raise ConfigError(f"gan_loss must be bce, lsgan or hinge; got {gan_loss!r}.")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self._fid: list[FeatureNetwork] = []  # in a list: a feature network, not part of the checkpoint
        self.fid_features = CatMetric(nan_strategy="disable")  # (N, 2, F): features of (output, target), all processes
        self._triplets: list[Tensor] = []

    def build(self) -> None:
        hp, dm = self.hparams, self.datamodule
        hp.image_shape = resolve_image_shape(hp.image_shape, dm, "Pix2Pix")  # (C_out, H, W) of the outputs
        hp.input_channels = hp.input_channels or (dm.input_channels if isinstance(dm, PairedData) else None)
        if hp.input_channels is None:
            raise ConfigError("Pix2Pix needs the number of input channels: use `datamodules.PairedImages` or set "
                              "`--model.input_channels`.")
        (c_out, height, width), c_in = hp.image_shape, int(hp.input_channels)
        PatchGAN.check_fits(height, width, hp.receptive_field)
        self.generator = UNet(c_in, c_out, unet_depth(height, width, hp.num_downs), hp.g_features, hp.norm, hp.dropout)
        self.discriminator = PatchGAN(c_in + c_out, hp.receptive_field, hp.d_features, hp.norm)

    def setup(self, stage: str) -> None:
        if self.hparams.fid_network != "none" and not self._fid and stage != "predict":
            networks = {"inception": InceptionFeatures, "tf_inception": TFInceptionFeatures}
            if self.hparams.fid_network not in networks:
                raise ConfigError(f"fid_network must be none, inception or tf_inception; got "
                                  f"{self.hparams.fid_network!r}.")
            network = networks[self.hparams.fid_network]
            self._fid.append(network(self.hparams.inception_weights))  # a missing file or package fails here

    # ---- translation ------------------------------------------------------------------------------------------
    def forward(self, inputs: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W) in [-1, 1], the generator as in its current mode."""
        return self.generator(inputs)

    def translate(self, inputs: Tensor) -> Tensor:
        """The generator's output as `test_time` says (for validate/test/predict)."""
        with batch_statistics(self.generator) if self.hparams.test_time == "as_training" else nullcontext():
            return self.generator(inputs)

    def pair(self, inputs: Tensor, outputs: Tensor) -> Tensor:
        """D's view: the input and an output side by side, (B, C_in + C_out, H, W) -> (B, 1, h, w) logits."""
        return self.discriminator(torch.cat([inputs, outputs], dim=1))

    # ---- training -------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        inputs, targets = self._unpack(batch)  # (B, C_in, H, W), (B, C_out, H, W) in [-1, 1]
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        outputs = self.generator(inputs)  # (B, C_out, H, W)
        with self.optimizing(opt_d, self.discriminator) as step:  # D: real pairs vs generated pairs, halved
            d_loss = 0.5 * discriminator_loss(self.pair(inputs, targets), self.pair(inputs, outputs.detach()),
                                              hp.gan_loss)
            step(d_loss)
        with self.optimizing(opt_g, self.generator) as step:  # G: fool the updated D, stay close to y in L1
            g_loss, g_gan, g_l1 = pix2pix_generator_loss(self.pair(inputs, outputs), outputs, targets, hp.gan_loss,
                                                         hp.l1_weight)
            step(g_loss)
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
                "crop_size and channels to the model (or train a new one).")
        return inputs, targets

    @property
    def lr_factor(self) -> LinearDecay:
        """`lr_factor(e)`: the learning-rate factor of epoch e (0-based): 1 for `constant_epochs` epochs, then
        `1 - (e + 1 - constant_epochs) / (decay_epochs + 1)`, down to 0."""
        return LinearDecay(self.hparams.constant_epochs, self.hparams.decay_epochs, offset=1)

    def configure_optimizers(self) -> Any:
        hp, max_epochs = self.hparams, self.trainer.max_epochs
        if max_epochs is not None and max_epochs > hp.constant_epochs + hp.decay_epochs:
            rank_zero_warn(f"max_epochs={max_epochs} is more than constant_epochs + decay_epochs = "
                           f"{hp.constant_epochs + hp.decay_epochs}: the epochs after those train at learning rate 0.")
        optimizers = [adam(self, net.parameters(), lr=hp.lr, betas=hp.betas)
                      for net in (self.generator, self.discriminator)]
        return optimizers, [epoch_schedule(opt, self.lr_factor) for opt in optimizers]  # checkpointed: resumes too

    # ---- evaluation: each pair counted once under DDP ---------------------------------------------------------
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        stage = "test" if self.stage == "test" else "val"
        inputs, targets = self._unpack(batch)
        keep = self.first_visit(batch_idx, len(inputs))  # (B,) bool: DDP's repeated pairs out
        outputs = self.translate(inputs).float()  # the whole batch, translated with its own statistics
        out, target = outputs.add(1).div(2).clamp(0, 1), targets.float().add(1).div(2)  # [0, 1] pixels
        per_image = {  # (B,) each, averaged over the kept pairs of every process
            "l1": (out - target).abs().mean((1, 2, 3)) * 2,  # on the [-1, 1] scale of the training loss
            "psnr": peak_signal_noise_ratio(out, target, data_range=1.0, reduction="none", dim=(1, 2, 3)),
            "ssim": structural_similarity_index_measure(out, target, data_range=1.0, reduction="none"),
        }
        self.log_means(stage, {k: v[keep].mean() for k, v in per_image.items()}, int(keep.sum()), prog_bar=True)
        inputs, outputs, targets = inputs[keep].float(), outputs[keep], targets[keep].float()
        if self._fid and keep.any():
            net = self._fid[0].to(self.device)
            self.fid_features.update(torch.stack([net(outputs), net(targets)], dim=1).float())  # (B, 2, F)
        if (take := self.hparams.num_triplets - sum(len(t) for t in self._triplets) // 3) > 0:  # triplets missing
            rgb = [t[:take].expand(-1, 3, -1, -1) if t.shape[1] == 1 else t[:take] for t in (inputs, outputs, targets)]
            self._triplets.append(torch.stack(rgb, dim=1).flatten(0, 1).cpu())  # (take * 3, 3, H, W), row by row

    test_step = validation_step  # the same evaluation, logged under test/

    def on_validation_epoch_end(self) -> None:
        stage = "test" if self.stage == "test" else "val"
        if self._fid:
            features = self.fid_features.compute()  # (N, 2, F), gathered from every process
            if len(features) >= 2 and self.trainer.is_global_zero:
                fid = frechet_distance(features[:, 1].cpu(), features[:, 0].cpu())  # targets vs outputs
                self.log(f"{stage}/{metric_name(self._fid[0], 'fid')}", fid, rank_zero_only=True)
            self.fid_features.reset()
        if self._triplets and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            save_and_log_images(self.trainer, f"{stage}/triplets", torch.cat(self._triplets), nrow=3)
        self._triplets = []

    on_test_epoch_end = on_validation_epoch_end

    # ---- predict: translate a folder ---------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"images": self.translate(batch["input"]), "names": list(batch["name"])}
